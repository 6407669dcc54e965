"""A raw parallel corpus -> a folder ready for ``fairseq-train --task translation``.

Each side is Moses-normalised and tokenised in its own language (sacremoses, through
fairseq's ``moses`` tokenizer), optionally lower-cased; one fastBPE model is learned on
both training sides together and applied to both; ``fairseq-preprocess -s -t
--joined-dictionary`` binarizes.  A pair is dropped (and counted) when either side is
empty or too long, so the two sides stay aligned; files whose line counts differ are
refused.  The codes and the settings are kept beside the binarized data.

    python -m fairseq_vrae.prepare_pairs --src-lang en --tgt-lang de \\
        --trainpref raw/train --validpref raw/val --testpref raw/test_2016_flickr --destdir data-bin/multi30k
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

from .prepare_text import (
    InputError,
    LineCounts,
    TextNormalizer,
    add_subword_and_binarization_args,
    apply_codes,
    bpe_codes,
    read_lines,
    run_command,
    write_lines,
)

logger = logging.getLogger("fairseq_vrae.prepare_pairs")

SPLITS = ("train", "valid", "test")


def read_pair(prefix: str, src: str, tgt: str) -> Tuple[List[str], List[str]]:
    """Both sides of a split, refused unless they have as many lines."""
    paths = f"{prefix}.{src}", f"{prefix}.{tgt}"
    for path in paths:
        if not os.path.exists(path):
            raise InputError(f"{path} does not exist (a split is PREFIX.{src} and PREFIX.{tgt})")
    sources, targets = list(read_lines(paths[0])), list(read_lines(paths[1]))
    if len(sources) != len(targets):
        raise InputError(
            f"{paths[0]} has {len(sources)} lines but {paths[1]} has {len(targets)}: "
            f"the sides of a parallel corpus must be aligned line by line"
        )
    if not sources:
        raise InputError(f"{paths[0]} and {paths[1]} are empty")
    return sources, targets


def tokenize_pairs(
    sources: List[str], targets: List[str], normalizers: Tuple[TextNormalizer, TextNormalizer],
    max_tokens: int, long_lines: str, counts: LineCounts,
) -> Tuple[List[str], List[str]]:
    kept_sources, kept_targets = [], []
    for source, target in zip(sources, targets):
        counts.read += 1
        sides = [normalizers[0](source), normalizers[1](target)]
        if not all(sides):
            counts.empty += 1
            continue
        if any(len(side.split()) > max_tokens for side in sides):
            if long_lines == "skip":
                counts.too_long += 1
                continue
            counts.truncated += 1
            sides = [" ".join(side.split()[:max_tokens]) for side in sides]
        kept_sources.append(sides[0])
        kept_targets.append(sides[1])
    if not kept_sources:
        raise InputError(f"no usable pair ({counts.empty} with an empty side, {counts.too_long} too long)")
    return kept_sources, kept_targets


def binarize(prefixes: Dict[str, str], src: str, tgt: str, destdir: str, workers: int, threshold: int) -> None:
    from fairseq import options
    from fairseq_cli import preprocess

    argv = ["--source-lang", src, "--target-lang", tgt, "--joined-dictionary", "--destdir", destdir,
            "--workers", str(workers), "--thresholdsrc", str(threshold), "--thresholdtgt", str(threshold)]
    for split, prefix in prefixes.items():
        argv += [f"--{split}pref", prefix]
    preprocess.main(options.get_preprocessing_parser().parse_args(argv))


def generation_flags(args) -> str:
    """The flags that make fairseq-generate/-interactive read and write plain text (the
    Moses languages come from the translation task's -s/-t)."""
    flags = "--tokenizer moses"
    if args.bpe == "fastbpe":
        flags += f" --bpe fastbpe --bpe-codes {os.path.join(args.destdir, 'bpecodes')}"
    return flags


def prepare(args: argparse.Namespace) -> Dict[str, LineCounts]:
    if not args.trainpref:
        raise InputError("give --trainpref (with --validpref/--testpref)")
    if args.src_lang == args.tgt_lang:
        raise InputError("--src-lang and --tgt-lang must differ (they name the files)")
    if args.bpe == "fastbpe" and args.bpe_codes is None and args.bpe_merges <= 0:
        raise InputError("--bpe-merges must be positive")
    existing = [f"dict.{lang}.txt" for lang in (args.src_lang, args.tgt_lang) if os.path.exists(os.path.join(args.destdir, f"dict.{lang}.txt"))]
    if existing:
        raise InputError(f"{args.destdir} already holds binarized data ({', '.join(existing)}); remove it or give another --destdir")
    os.makedirs(args.destdir, exist_ok=True)
    normalizers = (TextNormalizer(args.src_lang, args.lowercase), TextNormalizer(args.tgt_lang, args.lowercase))

    counts: Dict[str, LineCounts] = {}
    splits: Dict[str, Tuple[List[str], List[str]]] = {}
    for split in SPLITS:
        prefix = getattr(args, f"{split}pref")
        if prefix:
            counts[split] = LineCounts()
            sources, targets = read_pair(prefix, args.src_lang, args.tgt_lang)
            splits[split] = tokenize_pairs(
                sources, targets, normalizers, args.max_tokens_per_line, args.long_lines, counts[split]
            )
            c = counts[split]
            logger.info(
                f"{split}: {c.read} pairs; {c.empty} with an empty side skipped; {c.too_long} with a side "
                f"longer than {args.max_tokens_per_line} tokens skipped; {c.truncated} truncated"
            )

    with tempfile.TemporaryDirectory() as work:
        # one model for both languages, learned on both training sides
        joint = os.path.join(work, "train.joint")
        write_lines(joint, splits["train"][0] + splits["train"][1])
        codes = bpe_codes(args, joint)
        prefixes = {}
        for split, (sources, targets) in splits.items():
            prefixes[split] = os.path.join(work, split)
            for lang, lines in ((args.src_lang, sources), (args.tgt_lang, targets)):
                write_lines(f"{prefixes[split]}.{lang}", apply_codes(lines, codes) if codes else lines)
                if args.keep_text:
                    shutil.copyfile(f"{prefixes[split]}.{lang}", os.path.join(args.destdir, f"{split}.{lang}"))
        binarize(prefixes, args.src_lang, args.tgt_lang, args.destdir, args.workers, args.threshold)

    settings = {
        "src_lang": args.src_lang,
        "tgt_lang": args.tgt_lang,
        "lowercase": args.lowercase,
        "bpe": args.bpe,
        "bpe_codes": "bpecodes" if args.bpe == "fastbpe" else None,
        "generation_flags": generation_flags(args),
        "pairs": {split: len(pair[0]) for split, pair in splits.items()},
    }
    with open(os.path.join(args.destdir, "prepare.json"), "w") as handle:
        json.dump(settings, handle, indent=2)
    return counts


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Tokenise (sacremoses) both sides, learn joint BPE (fastBPE) and binarize a parallel corpus.",
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--src-lang", "-s", required=True, help="source language: files are PREFIX.<src-lang>")
    io.add_argument("--tgt-lang", "-t", required=True, help="target language: files are PREFIX.<tgt-lang>")
    io.add_argument("--trainpref", help="training pair prefix (UTF-8, one sentence per line per side)")
    io.add_argument("--validpref", help="validation pair prefix")
    io.add_argument("--testpref", help="test pair prefix")
    io.add_argument("--destdir", required=True, help="output folder for fairseq-train --task translation")
    io.add_argument("--keep-text", action="store_true", help="also keep the tokenised, BPE'd text")
    text = parser.add_argument_group("tokenisation")
    text.add_argument("--lowercase", action="store_true")
    text.add_argument("--max-tokens-per-line", type=int, default=250,
                      help="a pair with a longer side (in Moses tokens) is skipped or truncated")
    text.add_argument("--long-lines", choices=["skip", "truncate"], default="skip")
    add_subword_and_binarization_args(parser, merges_help="joint merges learned on both training sides")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_known_args(argv)[0]
    ready = f"--task translation -s {args.src_lang} -t {args.tgt_lang}"
    return run_command(parser, prepare, argv, ready, generation_flags)

if __name__ == "__main__":
    sys.exit(main())
