# Sourced by compare.sh and compare_mt.sh (after env.sh): the device flags and a
# resumable training step.  Expects OUT and BIN to be set.

# --cpu unless torch sees a CUDA device
DEVICE=()
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEVICE=(--cpu)
fi

# train NAME ARGS...: fairseq-train into $OUT/NAME, JSON log in train.log (appended to
# on a resume), seconds in wall; skipped once $OUT/NAME/trained exists
train() {
  local name="$1"; shift
  local dir="$OUT/$name"
  if [ -f "$dir/trained" ]; then echo "   $name: trained already"; return; fi
  mkdir -p "$dir"
  local start; start=$(date +%s.%N)
  fairseq-train "$BIN" "$@" --save-dir "$dir" >>"$dir/train.log" 2>&1 || {
    tail -20 "$dir/train.log" >&2; echo "training $name failed" >&2; exit 1; }
  "$PYTHON" -c "print(round($(date +%s.%N) - $start, 1))" >>"$dir/wall"
  touch "$dir/trained"
}
