#!/usr/bin/env bash
# Set up (if needed) and run the test suite (pytest.ini: tests/).  Extra arguments go to
# pytest: test files or -k to run a part.
# The suite runs in TEST_WORKERS processes (default 2, one per core; 0 runs it in this
# process); each test file stays in one process, so its module fixtures are built once,
# and each process computes on one thread (OMP_NUM_THREADS, also for the fairseq
# commands the tests start), so the workers do not contend for the cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh"
cd "$REPO_ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PYTHON" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
