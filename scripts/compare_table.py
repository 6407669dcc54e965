#!/usr/bin/env python
"""Markdown table of a ``scripts/compare.sh`` output folder (one sub-folder per model).

Each model folder holds ``train.log`` (fairseq-train, ``--log-format json``), possibly
``pretrain.log``, ``wall`` (seconds, one line per training stage) and ``<split>.log``
(fairseq-validate on that split: ``test.log``, or ``valid.log`` for choosing a recipe).
"""

import argparse
import math
import os
import sys
from typing import List

from fairseq_vrae.fairseq_output import FairseqOutputError, train_tokens_per_second, validate_metrics, wall_seconds


def row(folder: str, name: str, vae_arch: str = "vrae_lstm", split: str = "test") -> List[str]:
    test = validate_metrics(os.path.join(folder, f"{split}.log"))
    wps = train_tokens_per_second([os.path.join(folder, "pretrain.log"), os.path.join(folder, "train.log")])
    wall = wall_seconds(os.path.join(folder, "wall"))
    speed = f"{wps:,.0f}" if wps else "–"
    minutes = f"{wall / 60:.1f} min"
    if "iw_ppl" in test:  # a VAE: importance-weighted estimates
        return [f"{vae_arch} ({name})", f"{test['iw_ppl']:.2f}", f"{test['iw_nll']:.2f}",
                f"{test['elbo']:.2f}", f"{test['kl']:.2f}", f"{test['mi']:.2f}",
                f"{int(test['au'])}", speed, minutes]
    # a language model: exact; fairseq-validate gives loss in bits per token and the
    # split's total tokens (wpb) and sentences (bsz)
    nll = test["loss"] * math.log(2) * test["wpb"] / test["bsz"]
    return [f"{name} (fairseq)", f"{test['ppl']:.2f}", f"{nll:.2f}", "–", "–", "–", "–", speed, minutes]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--caption", default="")
    parser.add_argument("--vae-arch", default="vrae_lstm", help="the VAE rows' architecture, for their labels")
    parser.add_argument("--split", default="test", help="read <split>.log of each model")
    args = parser.parse_args(argv)
    header = ["model", f"{args.split} PPL", "NLL/sentence", "−ELBO/sentence", "KL", "MI", "AU",
              "train tokens/s", "train wall time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in args.models:
        lines.append("| " + " | ".join(row(os.path.join(args.folder, name), name, args.vae_arch, args.split)) + " |")
    if args.caption:
        lines += ["", args.caption + ". PPL per token with </s>; NLL, −ELBO, KL and MI in nats per sentence; "
                  "the VAEs' PPL and NLL are importance-weighted estimates, the LM's are exact."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FairseqOutputError as error:
        sys.exit(error)  # its message, without a traceback
