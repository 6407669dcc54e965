#!/usr/bin/env python
"""Markdown table of a ``scripts/compare_mt.sh`` output folder.

Each system folder holds ``train.log`` (``--log-format json``), ``wall`` (seconds),
``test.bleu`` (the sacreBLEU line of ``fairseq-generate --beam 5``, absent for systems
scored by their average BLEU) and ``<decoding>.diversity.json`` files written by
``scripts/diversity.py``; a conditional VAE's folder also ``posterior.bleu`` (translating
with the posterior mean of z, which reads the reference) and ``test.log``
(``fairseq-validate --iw-samples``: KL and active units on the test split).
"""

import argparse
import json
import os
import sys

from fairseq_vrae.fairseq_output import (FairseqOutputError, generate_bleu, train_tokens_per_second,
                                         validate_metrics, wall_seconds)

HEADER = ["system", "decoding of the K hypotheses", "test BLEU (beam 5)", "average BLEU", "oracle BLEU",
          "pairwise BLEU", "all K identical", "posterior-mean BLEU", "KL", "AU", "train tokens/s",
          "train wall time"]


def test_bleu(folder: str, name: str = "test.bleu"):
    path = os.path.join(folder, name)
    return generate_bleu(path) if os.path.exists(path) else None


def rows(folder: str, name: str):
    bleu = test_bleu(folder)
    wps = train_tokens_per_second([os.path.join(folder, "train.log")])
    wall = wall_seconds(os.path.join(folder, "wall"))
    posterior = test_bleu(folder, "posterior.bleu")
    latent = validate_metrics(os.path.join(folder, "test.log")) if os.path.exists(os.path.join(folder, "test.log")) else {}
    found = sorted(f for f in os.listdir(folder) if f.endswith(".diversity.json"))
    if not found:
        raise SystemExit(f"{folder}: no *.diversity.json (run scripts/diversity.py --json)")
    for file in found:
        metrics = json.load(open(os.path.join(folder, file)))
        yield [
            name, file[: -len(".diversity.json")],
            "–" if bleu is None else f"{bleu:.2f}",
            f"{metrics['average_bleu']:.2f}", f"{metrics['oracle_bleu']:.2f}", f"{metrics['pairwise_bleu']:.2f}",
            f"{100 * metrics['all_identical']:.1f}%", "–" if posterior is None else f"{posterior:.2f}",
            f"{latent['kl']:.2f}" if "kl" in latent else "–", f"{latent['au']:.0f}" if "au" in latent else "–",
            "–" if wps is None else f"{wps:,.0f}", f"{wall / 60:.1f} min",
        ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("systems", nargs="+")
    parser.add_argument("--caption", default="")
    args = parser.parse_args(argv)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name in args.systems:
        lines += ["| " + " | ".join(row) + " |" for row in rows(os.path.join(args.folder, name), name)]
    if args.caption:
        lines += ["", args.caption]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FairseqOutputError as error:
        sys.exit(error)  # its message, without a traceback
