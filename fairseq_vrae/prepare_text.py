"""Raw text -> a folder ready for ``fairseq-train --task vrae_lm``.

Moses normalisation and tokenisation (sacremoses, through fairseq's own ``moses``
tokenizer so that ``--tokenizer moses`` at generation time undoes exactly this),
optional lower-casing, fastBPE subwords (codes learned on train with fastBPE's
``learnbpe``, or given), then ``fairseq-preprocess --only-source``.  The codes
(``bpecodes``) and the settings (``prepare.json``) are kept beside the binarized data.

    python -m fairseq_vrae.prepare_text --input corpus.txt --destdir data-bin/corpus
"""

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

logger = logging.getLogger("fairseq_vrae.prepare_text")

SPLITS = ("train", "valid", "test")


class InputError(ValueError):
    """Raised for input the pipeline refuses, with the file (and line) to blame."""


@dataclass
class LineCounts:
    read: int = 0
    empty: int = 0
    too_long: int = 0
    truncated: int = 0


def read_lines(path: str) -> Iterator[str]:
    """UTF-8 lines without their end (``\\n`` or ``\\r\\n``); bad bytes name file and line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{path}, line {number}: not valid UTF-8 ({error.reason} at byte "
                    f"{error.start}); convert the file, e.g. with iconv -f <encoding> -t UTF-8"
                ) from None


class TextNormalizer:
    """Moses punctuation normalisation + tokenisation (+ lower-casing)."""

    def __init__(self, lang: str = "en", lowercase: bool = False):
        from fairseq.data.encoders.moses_tokenizer import MosesTokenizer, MosesTokenizerConfig
        from sacremoses import MosesPunctNormalizer

        self.normalizer = MosesPunctNormalizer(lang=lang)
        self.tokenizer = MosesTokenizer(MosesTokenizerConfig(source_lang=lang, target_lang=lang))
        self.lowercase = lowercase

    def __call__(self, line: str) -> str:
        text = self.tokenizer.encode(self.normalizer.normalize(line.strip()))
        return text.lower() if self.lowercase else text


def fastbpe_command() -> str:
    """The ``fastbpe`` learner built by scripts/setup.sh (or FASTBPE on the PATH)."""
    here = os.path.join(os.path.dirname(sys.executable), "fastbpe")
    candidates = [os.environ.get("FASTBPE_BIN"), here, shutil.which("fastbpe")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "the fastbpe command (fastBPE's learnbpe) was not found; run scripts/setup.sh "
        "or set FASTBPE_BIN"
    )


def learn_codes(train_file: str, merges: int, codes_path: str) -> None:
    with open(codes_path, "w", encoding="utf-8") as out:
        subprocess.run(
            [fastbpe_command(), "learnbpe", str(merges), train_file],
            stdout=out, stderr=subprocess.DEVNULL, check=True,
        )


def bpe_codes(args, training_text: str) -> Optional[str]:
    """``bpecodes`` in --destdir: --bpe-codes copied there, or codes learned on
    ``training_text``; None with --bpe none."""
    if args.bpe != "fastbpe":
        return None
    codes = os.path.join(args.destdir, "bpecodes")
    if args.bpe_codes:
        if os.path.abspath(args.bpe_codes) != os.path.abspath(codes):
            shutil.copyfile(args.bpe_codes, codes)
    else:
        learn_codes(training_text, args.bpe_merges, codes)
    return codes


def apply_codes(lines: List[str], codes_path: str) -> List[str]:
    import fastBPE

    return fastBPE.fastBPE(codes_path).apply(lines)


def split_single_file(lines: List[str], valid_fraction: float, test_fraction: float, seed: int) -> Dict[str, List[str]]:
    """Shuffle with ``seed`` and cut off valid and test; the rest is train."""
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, int(round(valid_fraction * len(lines))))
    n_test = max(1, int(round(test_fraction * len(lines))))
    if n_valid + n_test >= len(lines):
        raise InputError(f"{len(lines)} sentences are too few to split into train, valid and test")
    pick = lambda ids: [lines[i] for i in sorted(ids)]  # noqa: E731
    return {
        "valid": pick(order[:n_valid]),
        "test": pick(order[n_valid : n_valid + n_test]),
        "train": pick(order[n_valid + n_test :]),
    }


def tokenize_file(path: str, normalizer: TextNormalizer, max_tokens: int, long_lines: str, counts: LineCounts) -> List[str]:
    out = []
    for line in read_lines(path):
        counts.read += 1
        text = normalizer(line)
        if not text:
            counts.empty += 1
            continue
        tokens = text.split()
        if len(tokens) > max_tokens:
            if long_lines == "skip":
                counts.too_long += 1
                continue
            counts.truncated += 1
            text = " ".join(tokens[:max_tokens])
        out.append(text)
    if counts.read == 0:
        raise InputError(f"{path} is empty")
    if not out:
        raise InputError(f"{path} has no usable sentence ({counts.empty} empty, {counts.too_long} too long)")
    return out


def write_lines(path: str, lines: List[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)


def binarize(text_files: Dict[str, str], destdir: str, workers: int, threshold: int, srcdict: Optional[str]) -> None:
    from fairseq import options
    from fairseq_cli import preprocess

    argv = ["--only-source", "--destdir", destdir, "--workers", str(workers), "--thresholdsrc", str(threshold)]
    for split, path in text_files.items():
        argv += [f"--{split}pref", path]  # without --source-lang the prefix is the file
    if srcdict:
        argv += ["--srcdict", srcdict]
    preprocess.main(options.get_preprocessing_parser().parse_args(argv))


def prepare(args: argparse.Namespace) -> Dict[str, LineCounts]:
    if args.input and any(getattr(args, s) for s in SPLITS):
        raise InputError("give either --input (one file to split) or --train/--valid/--test")
    if not args.input and not args.train:
        raise InputError("give --input FILE or --train FILE (with --valid/--test)")
    if args.bpe == "fastbpe" and args.bpe_codes is None and args.bpe_merges <= 0:
        raise InputError("--bpe-merges must be positive")
    if os.path.exists(os.path.join(args.destdir, "dict.txt")) and not args.srcdict:
        raise InputError(f"{args.destdir} already holds binarized data (dict.txt); remove it or give another --destdir")
    os.makedirs(args.destdir, exist_ok=True)
    normalizer = TextNormalizer(args.lang, args.lowercase)

    counts: Dict[str, LineCounts] = {}
    if args.input:
        counts["input"] = LineCounts()
        lines = tokenize_file(args.input, normalizer, args.max_tokens_per_line, args.long_lines, counts["input"])
        splits = split_single_file(lines, args.valid_fraction, args.test_fraction, args.seed)
    else:
        splits = {}
        for split in SPLITS:
            path = getattr(args, split)
            if path:
                counts[split] = LineCounts()
                splits[split] = tokenize_file(path, normalizer, args.max_tokens_per_line, args.long_lines, counts[split])
    for name, c in counts.items():
        logger.info(
            f"{name}: {c.read} lines; {c.empty} empty skipped; {c.too_long} longer than "
            f"{args.max_tokens_per_line} tokens skipped; {c.truncated} truncated"
        )

    with tempfile.TemporaryDirectory() as work:
        text_files = {}
        for split, lines in splits.items():
            text_files[split] = os.path.join(work, f"{split}.txt")
            write_lines(text_files[split], lines)
        codes = bpe_codes(args, text_files["train"])
        if codes:
            for split, lines in splits.items():
                write_lines(text_files[split], apply_codes(lines, codes))
        if args.keep_text:
            for split, path in text_files.items():
                shutil.copyfile(path, os.path.join(args.destdir, f"{split}.txt"))
        binarize(text_files, args.destdir, args.workers, args.threshold, args.srcdict)

    settings = {
        "lang": args.lang,
        "lowercase": args.lowercase,
        "bpe": args.bpe,
        "bpe_codes": "bpecodes" if args.bpe == "fastbpe" else None,
        "generation_flags": generation_flags(args),
        "sentences": {split: len(lines) for split, lines in splits.items()},
    }
    with open(os.path.join(args.destdir, "prepare.json"), "w") as handle:
        json.dump(settings, handle, indent=2)
    return counts


def generation_flags(args) -> str:
    """The flags that make fairseq-generate/-interactive read and write plain text."""
    flags = f"--tokenizer moses --source-lang {args.lang} --target-lang {args.lang}"
    if args.bpe == "fastbpe":
        flags += f" --bpe fastbpe --bpe-codes {os.path.join(args.destdir, 'bpecodes')}"
    return flags


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Tokenise (sacremoses), apply BPE (fastBPE) and binarize raw text for vrae_lm.",
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", help="one UTF-8 file, one sentence per line, split into train/valid/test")
    io.add_argument("--train", help="training text (UTF-8, one sentence per line)")
    io.add_argument("--valid", help="validation text")
    io.add_argument("--test", help="test text")
    io.add_argument("--destdir", required=True, help="output folder for fairseq-train")
    io.add_argument("--keep-text", action="store_true", help="also keep the tokenised text splits")
    io.add_argument("--valid-fraction", type=float, default=0.05)
    io.add_argument("--test-fraction", type=float, default=0.05)
    io.add_argument("--seed", type=int, default=1, help="seed of the split of --input")
    text = parser.add_argument_group("tokenisation")
    text.add_argument("--lang", default="en", help="language of the Moses rules")
    text.add_argument("--lowercase", action="store_true")
    text.add_argument("--max-tokens-per-line", type=int, default=250,
                      help="longer lines (in Moses tokens) are skipped or truncated")
    text.add_argument("--long-lines", choices=["skip", "truncate"], default="skip")
    bin_ = add_subword_and_binarization_args(parser, merges_help="merges learned on train")
    bin_.add_argument("--srcdict", help="reuse this dictionary (e.g. a model's dict.txt)")
    return parser


def add_subword_and_binarization_args(parser: argparse.ArgumentParser, merges_help: str):
    """The fastBPE and fairseq-preprocess options; returns the binarization group."""
    bpe = parser.add_argument_group("subwords")
    bpe.add_argument("--bpe", choices=["fastbpe", "none"], default="fastbpe", help="none = word level")
    bpe.add_argument("--bpe-merges", type=int, default=10000, help=merges_help)
    bpe.add_argument("--bpe-codes", help="reuse these codes instead of learning them")
    bin_ = parser.add_argument_group("binarization")
    bin_.add_argument("--workers", type=int, default=1)
    bin_.add_argument("--threshold", type=int, default=0, help="map types seen this often or less to <unk>")
    return bin_


def run_command(parser: argparse.ArgumentParser, prepare_fn, argv, ready: str, flags_fn) -> int:
    """Parse, prepare, and print how to train and which flags give plain text; 2 on bad input."""
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    args = parser.parse_args(argv)
    try:
        prepare_fn(args)
    except InputError as error:
        logger.error(str(error))
        return 2
    print(f"ready: fairseq-train {args.destdir} {ready} ...")
    print(f"text in and out of fairseq-generate/-interactive: {flags_fn(args)}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_command(get_parser(), prepare, argv, "--user-dir fairseq_vrae --task vrae_lm", generation_flags)


if __name__ == "__main__":
    sys.exit(main())
