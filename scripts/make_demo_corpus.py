#!/usr/bin/env python
"""Build the bundled demo corpus: English sentences from Python's standard-library docstrings.

The docstrings ship with every CPython installation under the Python Software
Foundation License, which allows redistribution (see scripts/demo_data/LICENSE.md).
The output is deterministic for a given Python version; the committed copy was made
with CPython 3.11.7 and is what ``scripts/demo.sh`` uses, so the demo does not depend
on the Python it runs on.

    python scripts/make_demo_corpus.py scripts/demo_data/stdlib_sentences.txt
"""

import argparse
import ast
import os
import random
import re
import sysconfig

SENTENCE_END = re.compile(r"(?<=[a-z][.!?])\s+(?=[A-Z])")
# characters that mark code, markup or paths rather than prose
NOT_PROSE = re.compile(r"[_=(){}\[\]<>*`\\|#@$%^~:;/\"]|\.\w|\d{3,}|\s'|'\s|>>>|\bhttps?\b")


def docstrings(path):
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=True)
            if text:
                yield text


def sentences(docstring):
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = paragraph.splitlines()
        if any(line.startswith((" ", "\t", "-", "+", "*", ">>>")) for line in lines):
            continue  # code samples, option tables and lists
        prose = " ".join(line.strip() for line in lines)
        for sentence in SENTENCE_END.split(prose):
            sentence = sentence.strip()
            words = sentence.split()
            if not 5 <= len(words) <= 30:
                continue
            if not (sentence[0].isupper() and sentence.endswith(".") and sentence.isascii()):
                continue
            if NOT_PROSE.search(sentence[:-1]):
                continue
            yield sentence


def stdlib_files(root):
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "__pycache__"}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in skip)
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    seen, corpus = set(), []
    for path in stdlib_files(sysconfig.get_paths()["stdlib"]):
        for docstring in docstrings(path):
            for sentence in sentences(docstring):
                if sentence not in seen:
                    seen.add(sentence)
                    corpus.append(sentence)
    random.Random(args.seed).shuffle(corpus)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.writelines(sentence + "\n" for sentence in corpus)
    print(f"{len(corpus)} sentences -> {args.output}")


if __name__ == "__main__":
    main()
