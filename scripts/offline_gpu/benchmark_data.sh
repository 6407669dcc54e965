#!/usr/bin/env bash
# Binarizes the benchmark data into DESTDIR unless it is already there: Penn Treebank
# when ../shared/data/ptb exists, else the bundled demo corpus.  DESTDIR/SOURCE names
# which.  Used by gpu_bundle.sh and verify_gpu.sh.
#
#   bash scripts/offline_gpu/benchmark_data.sh DESTDIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
DEST="$1"
if [ -f "$DEST/dict.txt" ]; then
  exit 0
fi
PTB="$(dirname "$REPO_ROOT")/shared/data/ptb"
if [ -f "$PTB/ptb.train.txt" ]; then
  fairseq-preprocess --only-source --trainpref "$PTB/ptb.train.txt" --validpref "$PTB/ptb.valid.txt" \
    --testpref "$PTB/ptb.test.txt" --destdir "$DEST" --workers 2 >/dev/null
  echo "Penn Treebank" > "$DEST/SOURCE"
else
  "$PYTHON" -m fairseq_vrae.prepare_text --input "$REPO_ROOT/scripts/demo_data/stdlib_sentences.txt" \
    --destdir "$DEST" --workers 2 >/dev/null
  echo "bundled demo corpus" > "$DEST/SOURCE"
fi
