#!/usr/bin/env bash
# GPU verification (not part of CI, which has no GPU): mixed-precision training of
# vrae_lstm with each of fairseq's precision options, the torchrun + c10d path, and
# the speed benchmark.  Needs an environment with a CUDA build of torch and this
# project installed: scripts/setup.sh with TORCH_SPEC set to a CUDA wheel, or, on a
# machine without internet whose Python has torch, scripts/offline_gpu/gpu_bundle.sh (run where
# PyPI is reachable) and then scripts/offline_gpu/gpu_install.sh there.
#
#   bash scripts/offline_gpu/verify_gpu.sh [bin-dir]      # default: Penn Treebank or the demo corpus
#
# Output (logs, the benchmark's JSON) goes to VERIFY_DIR (default gpu_verification/).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "verify_gpu: no CUDA device visible to torch; nothing to verify" >&2
  exit 2
fi
OUT="${VERIFY_DIR:-$REPO_ROOT/gpu_verification}"
UPDATES="${VERIFY_UPDATES:-300}"
mkdir -p "$OUT"
"$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee "$OUT/device.txt"

if [ $# -ge 1 ]; then
  BIN="$(cd "$1" && pwd)"
else
  BIN="$OUT/bin"
  bash "$REPO_ROOT/scripts/offline_gpu/benchmark_data.sh" "$BIN"
fi

TRAIN=(--user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm --arch vrae_lstm --criterion vrae_elbo
  --kl-schedule logistic --kl-logistic-midpoint $((UPDATES / 3)) --word-dropout 0.25 --free-bits 0.1
  --optimizer adam --lr 0.001 --clip-norm 5 --max-tokens 4096 --max-update "$UPDATES"
  --log-format json --log-interval 10 --validate-interval-updates $((UPDATES / 2)) --no-epoch-checkpoints)

# check LOG: every logged loss/kl finite, validation present; prints a one-line summary
check() {
  "$PYTHON" - "$1" "$2" <<'PY'
import json, math, sys
path, name = sys.argv[1], sys.argv[2]
inner, valid, overflows = [], [], 0
for line in open(path, encoding="utf-8"):
    if "| train_inner |" in line:
        inner.append(json.loads(line[line.index("{"):]))
    elif "| valid |" in line and "{" in line:
        valid.append(json.loads(line[line.index("{"):]))
    overflows += "gradient overflow detected" in line or "NOTE: overflow detected" in line
bad = [r["num_updates"] for r in inner if not all(math.isfinite(float(r[k])) for k in ("loss", "rec", "kl"))]
bad += ["valid"] if any(not math.isfinite(float(v["valid_loss"])) for v in valid) else []
ok = inner and valid and not bad
last = valid[-1] if valid else {}
print(f"{name:26s} {'OK  ' if ok else 'FAIL'} updates {inner[-1]['num_updates'] if inner else 0}, "
      f"valid ppl {last.get('valid_ppl', '-')}, valid kl {last.get('valid_kl', '-')}, "
      f"au {last.get('valid_au', '-')}, overflow skips {overflows}, non-finite at {bad or 'none'}")
sys.exit(0 if ok else 1)
PY
}

status=0
echo "== mixed precision ($UPDATES updates each)"
for flags in "" "--fp16" "--memory-efficient-fp16" "--amp" "--bf16"; do
  name="${flags:---fp32}"
  rm -rf "$OUT/ckpt${name}"
  # shellcheck disable=SC2086
  fairseq-train "$BIN" "${TRAIN[@]}" $flags --save-dir "$OUT/ckpt${name}" >"$OUT/train${name}.log" 2>&1 || true
  check "$OUT/train${name}.log" "$name" || status=1
done

echo "== torchrun, c10d (PyTorch DDP) on every visible GPU"
ngpu=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
rm -rf "$OUT/ckpt-c10d"
torchrun --nproc_per_node "$ngpu" "$(command -v fairseq-train)" "$BIN" "${TRAIN[@]}" --fp16 \
  --ddp-backend c10d --save-dir "$OUT/ckpt-c10d" >"$OUT/train-c10d.log" 2>&1 || true
check "$OUT/train-c10d.log" "torchrun c10d x$ngpu --fp16" || status=1

echo "== speed"
# the CPU row is measured on its own machine (README "Speed"); VERIFY_BENCH_DEVICES=cpu,cuda adds it
"$PYTHON" "$REPO_ROOT/scripts/benchmark_speed.py" --data "$BIN" --devices "${VERIFY_BENCH_DEVICES:-cuda}" --windows 10 --steps 20 \
  --sample-checkpoint "$OUT/ckpt--fp16/checkpoint_last.pt" --json "$OUT/benchmark.json" 2>/dev/null \
  | tee "$OUT/benchmark.txt"
exit $status
