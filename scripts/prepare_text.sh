#!/usr/bin/env bash
# Raw UTF-8 text -> binarized data for --task vrae_lm (sacremoses + fastBPE + fairseq-preprocess).
# All arguments go to `python -m fairseq_vrae.prepare_text`; run with --help for the options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh" >&2
exec "$PYTHON" -m fairseq_vrae.prepare_text "$@"
