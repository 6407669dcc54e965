#!/usr/bin/env python
"""Quality and diversity of K translations per source, from ``fairseq-generate`` output.

Reads the S-/T-/D- lines (H- lines where there is no D- line) of one or more
``fairseq-generate`` outputs with K hypotheses per source (``--nbest K``, one per expert
of fairseq's ``translation_moe``, or K latent samples), post-processes hypotheses and
references alike (``--remove-bpe``, ``--detokenize LANG`` for output written without
``--tokenizer``/``--bpe``) and scores everything with sacreBLEU the same way:

* average BLEU: the mean over k of the corpus BLEU of the k-th hypotheses;
* oracle BLEU: corpus BLEU of each source's hypothesis with the best sentence BLEU;
* pairwise BLEU (Shen et al. 2019, as ``examples/translation_moe/score.py``): corpus
  BLEU of every hypothesis against every other of the same source, all ordered pairs
  pooled into one corpus (lower = more diverse); also the mean over ordered pairs
  (k, l) of the corpus BLEU of set k against set l;
* the share of sources whose K hypotheses are all the same.

    python scripts/diversity.py gen.out --name transformer-nbest
"""

import argparse
import json
import sys
from typing import Dict

from fairseq_vrae.diversity import add_postprocessing_args, diversity, postprocessor, read_generate_output  # noqa: F401
from fairseq_vrae.fairseq_output import FairseqOutputError


HEADER = ["system", "K", "average BLEU", "oracle BLEU", "pairwise BLEU", "pairwise BLEU (mean of pairs)", "all K identical"]


def table_row(name: str, metrics: Dict[str, float]) -> str:
    cells = [name, str(metrics["k"]), f"{metrics['average_bleu']:.2f}", f"{metrics['oracle_bleu']:.2f}",
             f"{metrics['pairwise_bleu']:.2f}", f"{metrics['pairwise_bleu_mean_of_pairs']:.2f}",
             f"{100 * metrics['all_identical']:.1f}%"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outputs", nargs="+", help="fairseq-generate output file(s)")
    parser.add_argument("--name", default="system", help="the system's name in the table row")
    add_postprocessing_args(parser)
    parser.add_argument("--tokenize", default="13a", help="sacreBLEU tokenisation (none for tokenised text, as score.py)")
    parser.add_argument("--header", action="store_true", help="print the table header first")
    parser.add_argument("--json", help="also write the metrics here")
    args = parser.parse_args(argv)
    references, hypotheses = read_generate_output(args.outputs)
    process = postprocessor(args.remove_bpe, args.detokenize)
    ids = sorted(hypotheses)
    metrics = diversity([process(references[i]) for i in ids], [[process(h) for h in hypotheses[i]] for i in ids], args.tokenize)
    if args.header:
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "---|" * len(HEADER))
    print(table_row(args.name, metrics))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(metrics, handle, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FairseqOutputError as error:
        sys.exit(error)  # its message, without a traceback
