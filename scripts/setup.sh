#!/usr/bin/env bash
# Idempotent set-up: a Python environment with torch, fairseq 0.12.2, numpy<2,
# sacremoses, fastBPE, tensorboardX (for --tensorboard-logdir) and this project
# (editable, with its test extras).
# Uses the active virtualenv, else creates .venv at the repository root.
# TORCH_SPEC overrides the torch requirement used when torch is missing
# (default torch==2.13.0; pick a CPU or CUDA build to suit your machine).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [ ! -x "$PYTHON" ]; then
  echo "set-up: creating $REPO_ROOT/.venv"
  python3 -m venv "$REPO_ROOT/.venv"
fi
pip_quiet() { "$PYTHON" -m pip --disable-pip-version-check -q "$@"; }

stamp="$("$PYTHON" -c 'import sys; print(sys.prefix)')/.fairseq_vrae_setup"
fingerprint="$REPO_ROOT $(cat "$REPO_ROOT/setup.py" "$REPO_ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)"
installed_here() {
  "$PYTHON" - "$REPO_ROOT" <<'PY' 2>/dev/null
import importlib.util, os, sys
spec = importlib.util.find_spec("fairseq_vrae")
assert spec and os.path.realpath(spec.origin).startswith(os.path.realpath(sys.argv[1]))
for name in ("fairseq", "torch", "sacremoses", "fastBPE", "pytest", "xdist", "matplotlib", "tensorboardX"):
    assert importlib.util.find_spec(name), name
PY
  [ -x "$(dirname "$PYTHON")/fastbpe" ]
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && installed_here; then
  echo "set-up: up to date ($PYTHON)"
  exit 0
fi

# omegaconf 2.0.6 (needed by fairseq 0.12.2) has metadata that pip >= 24.1 rejects
if ! "$PYTHON" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) >= (24, 1))'; then
  pip_quiet install "pip<24.1"
fi
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "set-up: installing ${TORCH_SPEC:-torch==2.13.0}"
  pip_quiet install "${TORCH_SPEC:-torch==2.13.0}"
fi
pip_quiet install "numpy<2" cython wheel sacremoses
if ! "$PYTHON" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("fairseq") is None)'; then
  # built in an isolated environment, which skips its optional torch C++ extensions
  echo "set-up: building fairseq 0.12.2 (a few minutes)"
  pip_quiet install "fairseq==0.12.2" "numpy<2"
fi
if ! "$PYTHON" -c 'import fastBPE' 2>/dev/null; then
  # fastBPE 0.1.0 must be re-cythonized for Python >= 3.11
  pip_quiet install --no-build-isolation fastBPE
fi
# fastBPE's Python binding only applies codes; its learner is the C++ CLI in the same
# PyPI source distribution, built here as <env>/bin/fastbpe
if [ ! -x "$(dirname "$PYTHON")/fastbpe" ]; then
  echo "set-up: building the fastbpe command (fastBPE 0.1.0's learnbpe)"
  src="$(mktemp -d)"
  pip_quiet download --no-deps --no-binary :all: "fastBPE==0.1.0" -d "$src"
  tar xzf "$src"/fastBPE-0.1.0.tar.gz -C "$src"
  ${CXX:-g++} -std=c++11 -pthread -O3 "$src/fastBPE-0.1.0/fastBPE/main.cc" \
    -I"$src/fastBPE-0.1.0/fastBPE" -o "$(dirname "$PYTHON")/fastbpe"
  rm -rf "$src"
fi
pip_quiet install -e "$REPO_ROOT[test,bpe,plot,tensorboard]"
installed_here
echo "$fingerprint" > "$stamp"
echo "set-up: done ($PYTHON)"
