#!/usr/bin/env python
"""Long-document data from a one-sentence-per-line corpus: runs of consecutive sentences
joined into paragraphs of at most ``--max-tokens`` words (a sentence longer than that
stays alone and is reported), one paragraph per line, for training and evaluating
sentence VAEs on long inputs (e.g. ``vrae_lstm_big``, He et al. 2019's document
setting).

    python scripts/make_paragraphs.py data/ptb.train.txt paragraphs/train.txt --max-tokens 200
"""

import argparse
import sys
from typing import Iterable, Iterator, List


def paragraphs(sentences: Iterable[str], max_tokens: int) -> Iterator[List[str]]:
    """Greedy runs of consecutive non-empty sentences whose words fit in ``max_tokens``."""
    current: List[str] = []
    length = 0
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        if current and length + len(words) > max_tokens:
            yield current
            current, length = [], 0
        current.append(" ".join(words))
        length += len(words)
    if current:
        yield current


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--max-tokens", type=int, default=200, help="words per paragraph at most")
    args = parser.parse_args(argv)
    count, longest, over = 0, 0, 0
    with open(args.input, encoding="utf-8") as source, open(args.output, "w", encoding="utf-8") as target:
        for paragraph in paragraphs(source, args.max_tokens):
            text = " ".join(paragraph)
            length = len(text.split())
            over += length > args.max_tokens
            longest = max(longest, length)
            count += 1
            target.write(text + "\n")
    print(f"{count} paragraphs, at most {longest} words; {over} single sentences longer than {args.max_tokens}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
