#!/usr/bin/env bash
# Packs what an offline CUDA machine needs to run scripts/offline_gpu/verify_gpu.sh, for machines
# whose Python already has a CUDA build of torch but no fairseq (and no internet):
# wheels of the fairseq dependencies that such images lack, for that machine's Python
# (default 3.12, x86-64 Linux), fairseq 0.12.2's source distribution, and the
# benchmark data binarized here (Penn Treebank when ../shared/data/ptb exists, else the
# bundled demo corpus).  Run it where pip can reach PyPI:
#
#   bash scripts/offline_gpu/gpu_bundle.sh [bundle-dir]          # default: .gpu_bundle
#
# then, on the GPU machine, from the repository root:
#
#   bash scripts/offline_gpu/gpu_install.sh .gpu_bundle
#   VIRTUAL_ENV=/tmp/vrae-gpu bash scripts/offline_gpu/verify_gpu.sh .gpu_bundle/bin
#
# BUNDLE_PYTHON picks the target Python version (e.g. 3.11).  Packages that fairseq
# needs and images with PyTorch usually have (PyYAML, regex, tqdm, sacrebleu) are left
# out; name any that your image lacks in BUNDLE_EXTRA_WHEELS ("sacrebleu lxml ...").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
bash "$REPO_ROOT/scripts/setup.sh" >/dev/null

BUNDLE="${1:-$REPO_ROOT/.gpu_bundle}"
TARGET="${BUNDLE_PYTHON:-3.12}"
mkdir -p "$BUNDLE/wheels"
BUNDLE="$(cd "$BUNDLE" && pwd)"
pip_quiet() { "$PYTHON" -m pip --disable-pip-version-check -q "$@"; }

PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done
# numpy<2 because fairseq 0.12.2's data code needs it; pip<24.1 because omegaconf
# 2.0.6's metadata is refused by later pips; cython/setuptools/wheel build fairseq
# (wheel < 0.46 has no dependencies of its own).
pip_quiet download --no-deps --only-binary=:all: --python-version "$TARGET" --implementation cp \
  "${PLATFORMS[@]}" -d "$BUNDLE/wheels" \
  "numpy==1.26.4" "cython" "bitarray" "pip<24.1" "setuptools>=68,<70" "wheel<0.46" \
  "hydra-core==1.0.7" "omegaconf==2.0.6" ${BUNDLE_EXTRA_WHEELS:-}
# antlr4 4.8 (hydra-core 1.0.7's parser runtime) exists only as a source distribution
# of pure Python: built here into a wheel for any Python 3
if ! ls "$BUNDLE/wheels"/antlr4_python3_runtime-4.8-*.whl >/dev/null 2>&1; then
  pip_quiet wheel --no-deps "antlr4-python3-runtime==4.8" -w "$BUNDLE/wheels"
fi
if [ ! -f "$BUNDLE/fairseq-0.12.2.tar.gz" ]; then
  pip_quiet download --no-deps --no-binary :all: --no-build-isolation "fairseq==0.12.2" -d "$BUNDLE"
fi

bash "$REPO_ROOT/scripts/offline_gpu/benchmark_data.sh" "$BUNDLE/bin"
echo "gpu bundle for Python $TARGET: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1)), data: $(cat "$BUNDLE/bin/SOURCE")"
