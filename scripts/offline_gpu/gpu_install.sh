#!/usr/bin/env bash
# On an offline machine whose Python has torch (e.g. a CUDA image): a virtualenv on top
# of that Python with fairseq 0.12.2 and this project, installed only from a bundle made
# by scripts/offline_gpu/gpu_bundle.sh.  The image's packages (torch first of all) stay visible;
# the bundle's numpy<2 shadows a newer numpy there.
#
#   bash scripts/offline_gpu/gpu_install.sh [bundle-dir]      # default: .gpu_bundle
#   VIRTUAL_ENV=/tmp/vrae-gpu bash scripts/offline_gpu/verify_gpu.sh .gpu_bundle/bin
#
# VRAE_GPU_VENV (default /tmp/vrae-gpu) is where the environment goes; BASE_PYTHON
# (default python3) is the Python that has torch.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUNDLE="$(cd "${1:-$REPO_ROOT/.gpu_bundle}" && pwd)"
VENV="${VRAE_GPU_VENV:-/tmp/vrae-gpu}"
BASE_PYTHON="${BASE_PYTHON:-python3}"

if ! "$BASE_PYTHON" -c "import torch" 2>/dev/null; then
  echo "gpu_install: $BASE_PYTHON cannot import torch; set BASE_PYTHON to the Python that has it" >&2
  exit 2
fi
if [ ! -f "$BUNDLE/fairseq-0.12.2.tar.gz" ] || [ ! -d "$BUNDLE/wheels" ]; then
  echo "gpu_install: $BUNDLE is not a bundle from scripts/offline_gpu/gpu_bundle.sh" >&2
  exit 2
fi
"$BASE_PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
# The image's site-packages, added after the environment's own (so its numpy<2 wins).
# VRAE_NO_IMAGE_SITE hides them, which keeps torch out of fairseq's isolated build: as
# in scripts/setup.sh, fairseq is then built without its optional torch C++ extensions.
site_dirs="$("$BASE_PYTHON" -c 'import site; print(repr(site.getsitepackages()))')"
"$PY" - "$site_dirs" <<'PY'
import os, sys, sysconfig
purelib = sysconfig.get_paths()["purelib"]
line = ("import os, site; os.environ.get('VRAE_NO_IMAGE_SITE') or "
        f"list(map(site.addsitedir, filter(os.path.isdir, {sys.argv[1]})))\n")
with open(os.path.join(purelib, "zz_image_site.pth"), "w") as handle:
    handle.write(line)
PY
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$BUNDLE/wheels" PIP_DISABLE_PIP_VERSION_CHECK=1
pip_quiet() { "$PY" -m pip -q "$@"; }
pip_quiet install "pip<24.1"   # omegaconf 2.0.6's metadata is refused by later pips
pip_quiet install --no-deps "numpy<2" cython "setuptools>=68,<70" "wheel<0.46" "hydra-core==1.0.7" "omegaconf==2.0.6" \
  "antlr4-python3-runtime==4.8" bitarray
echo "gpu_install: building fairseq 0.12.2"
VRAE_NO_IMAGE_SITE=1 pip_quiet install --no-deps "$BUNDLE/fairseq-0.12.2.tar.gz"
pip_quiet install --no-deps --no-build-isolation --use-pep517 -e "$REPO_ROOT"

"$PY" - <<'PY'
import importlib.util, sys
needed = ("torch", "numpy", "fairseq", "fairseq_vrae", "hydra", "omegaconf", "yaml", "regex", "tqdm",
          "sacrebleu", "bitarray")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"gpu_install: missing {', '.join(missing)}; add them to BUNDLE_EXTRA_WHEELS in gpu_bundle.sh")
import numpy, torch, fairseq, fairseq.options  # noqa: E401
import fairseq_vrae.compat as compat
print(f"gpu_install: python {sys.version.split()[0]}, torch {torch.__version__} "
      f"(cuda available: {torch.cuda.is_available()}), numpy {numpy.__version__}, "
      f"fairseq {fairseq.__version__}; compat fixes {sorted(compat.APPLIED)}")
PY
echo "gpu_install: done; use it with VIRTUAL_ENV=$VENV"
