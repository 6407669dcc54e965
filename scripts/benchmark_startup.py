#!/usr/bin/env python
"""Interpreter start-up cost of the fairseq_vrae_compat.pth hook.

Times `python -c pass` with the hook and with it moved aside, interleaved, in the
environment this script runs in, and prints the medians and their difference.

    .venv/bin/python scripts/benchmark_startup.py [--runs 30]
"""
import argparse
import os
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    hooks = [os.path.join(d, "fairseq_vrae_compat.pth") for d in site.getsitepackages()]
    hook = next((h for h in hooks if os.path.exists(h)), None)
    if hook is None:
        sys.exit("fairseq_vrae_compat.pth is not installed in this environment")
    aside = os.path.join(tempfile.mkdtemp(), "hook.pth")

    def start_ms():
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return (time.perf_counter() - began) * 1000

    with_hook, without = [], []
    try:
        for _ in range(args.runs):
            with_hook.append(start_ms())
            shutil.move(hook, aside)
            without.append(start_ms())
            shutil.move(aside, hook)
    finally:
        if os.path.exists(aside):
            shutil.move(aside, hook)
    a, b = statistics.median(with_hook), statistics.median(without)
    print(f"python -c pass, median of {args.runs} interleaved runs each:")
    print(f"  with the hook    {a:6.1f} ms")
    print(f"  without the hook {b:6.1f} ms")
    print(f"  difference       {a - b:6.1f} ms")


if __name__ == "__main__":
    main()
