#!/usr/bin/env python
"""The figures that say whether a sentence VAE uses its latent code, from the outputs
the demo writes:

* ``--reconstructions``: ``fairseq-generate`` on a test split (posterior mean, greedy)
  with ``--tokenizer/--bpe`` flags, so S- and D- lines are plain text.  Reported: the
  share of distinct reconstructions; how often a reconstruction "matches its own
  input": its unigram F1 (lower-cased words) with its own input is above 0 and no
  other input's is higher; and reconstruction BLEU (sacreBLEU, detokenised text).
* ``--prior``: D- lines of prior samples; the number of distinct sentences.
* ``--homotopy``: D- lines of one interpolation; the number of distinct sentences, and
  whether its ends are the reconstructions of its two inputs (``--homotopy-ends``
  gives the ids of those inputs in ``--reconstructions``).
* ``--validate``: a ``fairseq-validate`` log; the bound's ppl, KL and AU.

    python scripts/demo_figures.py --reconstructions generate.test.txt --prior prior.txt \\
        --homotopy homotopy.txt --homotopy-ends 0 1 --validate validate.log [--json figures.json]
"""

import argparse
import json
import re
import sys
from collections import Counter
from typing import Dict, List, Sequence

from fairseq_vrae.fairseq_output import FairseqOutputError, read_generate, validate_metrics


def lines_by_id(path: str, kind: str) -> Dict[int, str]:
    """``{id: text}`` of the ``kind``-lines (S, H, D) of fairseq-generate output (the last
    line of each id)."""
    return {index: texts[-1] for index, texts in read_generate([path]).texts(kind).items()}


def all_lines(path: str, kind: str) -> List[str]:
    """The texts of every ``kind``-line in file order (the points of an interpolation
    are hypotheses of one id)."""
    return [record.text for record in read_generate([path]).records if record.kind == kind]


def words(text: str) -> Counter:
    return Counter(re.findall(r"\w+|[^\w\s]", text.lower()))


def unigram_f1(hypothesis: Counter, reference: Counter) -> float:
    overlap = sum((hypothesis & reference).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(hypothesis.values()), overlap / sum(reference.values())
    return 2 * precision * recall / (precision + recall)


def own_input_matches(inputs: Sequence[str], outputs: Sequence[str]) -> float:
    """Share of outputs whose unigram F1 with their own input is > 0 and not below their
    F1 with any other input (chance: about 1 / len(inputs))."""
    input_bags = [words(text) for text in inputs]
    matched = 0
    for index, output in enumerate(outputs):
        bag = words(output)
        scores = [unigram_f1(bag, other) for other in input_bags]
        if scores[index] > 0 and scores[index] >= max(scores):
            matched += 1
    return matched / max(1, len(outputs))


def reconstruction_figures(path: str) -> dict:
    from sacrebleu import corpus_bleu

    sources, outputs = lines_by_id(path, "S"), lines_by_id(path, "D")
    ids = sorted(set(sources) & set(outputs))
    if not ids:
        raise SystemExit(f"{path}: no S-/D- line pairs (generate with --tokenizer/--bpe flags)")
    inputs, recs = [sources[i] for i in ids], [outputs[i] for i in ids]
    return {
        "sentences": len(ids),
        "distinct_reconstructions": len(set(recs)) / len(ids),
        "own_input_matches": own_input_matches(inputs, recs),
        "chance_own_input_matches": 1 / len(ids),
        "reconstruction_bleu": corpus_bleu(recs, [inputs]).score,
        "reconstructions": {i: outputs[i] for i in ids},
    }


def validate_figures(path: str) -> dict:
    values = validate_metrics(path)
    return {key: values[key] for key in ("ppl", "kl", "au") if key in values}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reconstructions", required=True)
    parser.add_argument("--prior")
    parser.add_argument("--homotopy")
    parser.add_argument("--homotopy-ends", type=int, nargs=2, default=(0, 1))
    parser.add_argument("--validate")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    figures = reconstruction_figures(args.reconstructions)
    n = figures["sentences"]
    print(f"distinct reconstructions: {round(figures['distinct_reconstructions'] * n)} of {n} "
          f"({100 * figures['distinct_reconstructions']:.1f}%)")
    print(f"reconstruction matches its own input best: {100 * figures['own_input_matches']:.1f}% "
          f"(chance {100 * figures['chance_own_input_matches']:.1f}%)")
    print(f"reconstruction BLEU: {figures['reconstruction_bleu']:.2f}")
    if args.prior:
        samples = list(lines_by_id(args.prior, "D").values())
        figures["prior_samples"], figures["distinct_prior_samples"] = len(samples), len(set(samples))
        print(f"distinct prior samples: {len(set(samples))} of {len(samples)}")
    if args.homotopy:
        points = all_lines(args.homotopy, "D")
        first, last = (figures["reconstructions"].get(i) for i in args.homotopy_ends)
        figures["homotopy_points"], figures["distinct_homotopy"] = len(points), len(set(points))
        figures["homotopy_ends_are_reconstructions"] = bool(points) and points[0] == first and points[-1] == last
        print(f"distinct sentences on the homotopy: {len(set(points))} of {len(points)}"
              f" (ends are the reconstructions of its inputs: {'yes' if figures['homotopy_ends_are_reconstructions'] else 'no'})")
    if args.validate:
        test = validate_figures(args.validate)
        figures.update({f"test_{k}": v for k, v in test.items()})
        print("test bound: " + ", ".join(f"{k} {v:g}" for k, v in test.items()))
    if args.json:
        figures.pop("reconstructions")
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FairseqOutputError as error:
        sys.exit(error)  # its message, without a traceback
