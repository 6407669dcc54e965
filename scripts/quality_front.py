#!/usr/bin/env python
"""The quality-diversity front of a translation bench (Shen et al. 2019): for every
system of a ``scripts/compare_mt.sh`` folder and every value of its diversity knob, the
average BLEU of its K hypotheses per source against their pairwise BLEU (lower = more
diverse), with oracle BLEU and the share of sources whose K hypotheses are identical;
printed as a markdown table and drawn as a PNG.

The points are the ``fairseq-generate`` outputs ``<dir>/<system>/front/<knob>-<value>.out``
(``compare_mt.sh`` writes them: ``beam-5``, ``topk-10``, ``topp-0.9``, ``experts-5``,
``temperature-1.5``, ...), scored by :mod:`fairseq_vrae.diversity`.

    python scripts/quality_front.py compare_output/mt --png compare_output/mt/front.png
"""

import argparse
import itertools
import json
import os
import sys
from typing import Dict, List

from fairseq_vrae.diversity import add_postprocessing_args, diversity, postprocessor, read_generate_output
from fairseq_vrae.fairseq_output import FairseqOutputError

HEADER = ["system", "knob", "value", "average BLEU", "pairwise BLEU", "oracle BLEU", "all K identical"]


def knob_value(filename: str):
    """``temperature-1.5.out`` -> ("temperature", "1.5"), None for other files."""
    if not filename.endswith(".out") or "-" not in filename:
        return None
    knob, _, value = filename[: -len(".out")].partition("-")
    return knob, value


def sort_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def front_points(folder: str, remove_bpe: bool = False, detokenize: str = None) -> List[Dict]:
    """One dict per (system, knob, value) found under ``folder``, in table order."""
    process = postprocessor(remove_bpe, detokenize)
    points = []
    for system in sorted(os.listdir(folder)):
        front = os.path.join(folder, system, "front")
        if not os.path.isdir(front):
            if os.path.isdir(os.path.join(folder, system)):
                print(f"{system}: no front/ outputs, left out", file=sys.stderr)
            continue
        found = [(name, knob_value(name)) for name in os.listdir(front)]
        found = sorted(((kv, name) for name, kv in found if kv), key=lambda x: (x[0][0], sort_key(x[0][1])))
        for (knob, value), name in found:
            references, hypotheses = read_generate_output([os.path.join(front, name)])
            ids = sorted(hypotheses)
            metrics = diversity([process(references[i]) for i in ids],
                                [[process(h) for h in hypotheses[i]] for i in ids])
            points.append(dict(metrics, system=system, knob=knob, value=value))
    return points


def table(points: List[Dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for p in points:
        cells = [p["system"], p["knob"], p["value"], f"{p['average_bleu']:.2f}", f"{p['pairwise_bleu']:.2f}",
                 f"{p['oracle_bleu']:.2f}", f"{100 * p['all_identical']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(points: List[Dict], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    series: Dict[tuple, List[Dict]] = {}
    for p in points:
        series.setdefault((p["system"], p["knob"]), []).append(p)
    for marker, ((system, knob), members) in zip(itertools.cycle("osD^vP*X"), series.items()):
        xs = [p["pairwise_bleu"] for p in members]
        ys = [p["average_bleu"] for p in members]
        ax.plot(xs, ys, marker=marker, linestyle="-" if len(members) > 1 else "none", label=f"{system}, {knob}")
        for p in members:
            ax.annotate(p["value"], (p["pairwise_bleu"], p["average_bleu"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xlabel("pairwise BLEU (lower: more diverse)")
    ax.set_ylabel("average BLEU")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a compare_mt.sh COMPARE_DIR")
    parser.add_argument("--png", help="draw the front here")
    parser.add_argument("--json", help="also write the points here")
    parser.add_argument("--title", default="", help="the plot's title")
    add_postprocessing_args(parser)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.folder):
        raise SystemExit(f"{args.folder}: not a folder")
    points = front_points(args.folder, args.remove_bpe, args.detokenize)
    if not points:
        raise SystemExit(f"{args.folder}: no <system>/front/<knob>-<value>.out outputs (run scripts/compare_mt.sh)")
    print(table(points))
    if args.png:
        plot(points, args.png, args.title)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(points, handle, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as error:  # FairseqOutputError among them
        sys.exit(f"quality_front: {error}")
