# Sourced by the other scripts: picks the Python environment and exports PYTHON.
# The active virtualenv if there is one, else .venv at the repository root.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PYTHON="$VIRTUAL_ENV/bin/python"
else
  PYTHON="$REPO_ROOT/.venv/bin/python"
fi
export REPO_ROOT PYTHON
# fairseq's console scripts live beside the interpreter
export PATH="$(dirname "$PYTHON"):$PATH"
