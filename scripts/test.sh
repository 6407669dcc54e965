#!/usr/bin/env bash
# Set up (if needed) and run the test suite.  Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh"
cd "$REPO_ROOT"
exec "$PYTHON" -m pytest -q tests "$@"
