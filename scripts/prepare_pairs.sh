#!/usr/bin/env bash
# Raw parallel text -> binarized data for --task translation (sacremoses per language,
# joint fastBPE, fairseq-preprocess --joined-dictionary).  All arguments go to
# `python -m fairseq_vrae.prepare_pairs`; run with --help for the options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh" >&2
exec "$PYTHON" -m fairseq_vrae.prepare_pairs "$@"
