#!/usr/bin/env bash
# Drop-in comparison: fairseq's lstm_lm against the VAE recipes at the same sizes and
# the same number of updates, each evaluated on the test split the same way, printed
# as one markdown table.
#
#   bash scripts/compare.sh <bin-dir> [small|full]
#
# <bin-dir> is fairseq-preprocess --only-source output (dict.txt, train/valid/test).
# small (default): a budget for 2 CPU cores, about 18 minutes on Penn Treebank;
# full: the budget for a GPU; converge: every model trains until its validation loss
# has not improved for PATIENCE (3) epochs, at most MAX_EPOCH (50), on batches of
# BATCH_SENTENCES (32) sentences with Adam, the rate halved after two epochs without
# gain, dropout 0.5, and its best checkpoint is evaluated.  Environment overrides: UPDATES, IW_SAMPLES, EMBED,
# HIDDEN, LATENT, MAX_TOKENS, LR, DROPOUT, BN_GAMMA, SEED, RECIPES,
# COMPARE_DIR, EXTRA_TRAIN_FLAGS (e.g. "--fp16"), RUN_LM (0: leave the LM out),
# RECIPES may also name bn-vae-from-lm: bn-vae whose decoder starts from the LM trained in
# the same COMPARE_DIR (--load-pretrained-decoder-from; its updates come on top of the LM's),
# SPLIT (test; valid evaluates and tabulates the validation split instead, for
# choosing among recipes before the one test run),
# FAMILY (lstm: lstm_lm against vrae_lstm; transformer: transformer_lm against
# vrae_transformer with the same decoder, LAYERS post-norm layers of EMBED with HEADS
# heads, EMBED-d word embeddings and an FFN of 4 x EMBED, the VAE's encoder with
# ENC_LAYERS (default LAYERS) layers of the same size, both with an
# inverse-square-root schedule warmed up over a tenth of the updates).
#
# Runs resume: a model whose training finished is not trained again (an interrupted
# one continues from its checkpoint_last.pt), and one already evaluated is not
# evaluated again, so several invocations with different RECIPES (and RUN_LM=0) can
# share one COMPARE_DIR, in parallel, and a last one prints the whole table.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh" >/dev/null

if [ $# -lt 1 ] || [ ! -f "$1/dict.txt" ]; then
  echo "usage: bash scripts/compare.sh <bin-dir with dict.txt and train/valid/test> [small|full]" >&2
  exit 2
fi
BIN="$(cd "$1" && pwd)"
BUDGET="${2:-small}"
case "$BUDGET" in
  small) UPDATES="${UPDATES:-120}"; IW_SAMPLES="${IW_SAMPLES:-10}" ;;
  full) UPDATES="${UPDATES:-8000}"; IW_SAMPLES="${IW_SAMPLES:-500}" ;;
  converge) UPDATES=0; IW_SAMPLES="${IW_SAMPLES:-500}"; DROPOUT="${DROPOUT:-0.5}"; WARMUP="${WARMUP:-4000}" ;;
  *) echo "budget must be small, full or converge, got '$BUDGET'" >&2; exit 2 ;;
esac
EMBED="${EMBED:-256}"; HIDDEN="${HIDDEN:-256}"; LATENT="${LATENT:-32}"
MAX_TOKENS="${MAX_TOKENS:-4096}"; LR="${LR:-0.001}"; DROPOUT="${DROPOUT:-0.3}"
BN_GAMMA="${BN_GAMMA:-0.6}"; SEED="${SEED:-1}"
RECIPES="${RECIPES-bowman cyclical free-bits anneal-free-bits bn-vae}"
SPLIT="${SPLIT:-test}"; RUN_LM="${RUN_LM:-1}"; FAMILY="${FAMILY:-lstm}"; LAYERS="${LAYERS:-2}"; HEADS="${HEADS:-4}"
ENC_LAYERS="${ENC_LAYERS:-$LAYERS}"
OUT="${COMPARE_DIR:-$REPO_ROOT/compare_output/$BUDGET}"
read -r -a EXTRA <<< "${EXTRA_TRAIN_FLAGS:-}"
mkdir -p "$OUT"
source "$REPO_ROOT/scripts/compare_lib.sh"
echo "compare: $BIN, budget $BUDGET ($UPDATES updates, $IW_SAMPLES importance samples), output in $OUT"

COMMON=(--optimizer adam --lr "$LR" --clip-norm 5 --dropout "$DROPOUT"
  --seed "$SEED" --num-workers 0 --log-format json --log-interval 25
  --no-epoch-checkpoints "${DEVICE[@]}" "${EXTRA[@]}")
if [ "$BUDGET" = converge ]; then
  MAX_EPOCH="${MAX_EPOCH:-50}"; PATIENCE="${PATIENCE:-3}"; BATCH_SENTENCES="${BATCH_SENTENCES:-32}"
  # --max-update 0 is fairseq's "no limit": the epoch cap and early stopping end training
  COMMON+=(--batch-size "$BATCH_SENTENCES" --max-epoch "$MAX_EPOCH" --patience "$PATIENCE")
  [ "$FAMILY" = transformer ] || COMMON+=(--lr-scheduler reduce_lr_on_plateau --lr-shrink 0.5 --lr-patience 1)
  CHECKPOINT=checkpoint_best.pt
else
  COMMON+=(--max-tokens "$MAX_TOKENS" --disable-validation)
  CHECKPOINT=checkpoint_last.pt
fi
case "$FAMILY" in
  lstm)
    LM_NAME=lstm_lm; VAE_ARCH=vrae_lstm; SIZES="embedding $EMBED, hidden $HIDDEN, latent $LATENT"
    LM=(--arch lstm_lm --decoder-embed-dim "$EMBED" --decoder-hidden-size "$HIDDEN"
      --decoder-out-embed-dim "$HIDDEN" --decoder-layers 1)
    VAE=(--user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm --arch vrae_lstm --criterion vrae_elbo
      --embed-dim "$EMBED" --encoder-hidden-size "$HIDDEN" --decoder-hidden-size "$HIDDEN"
      --latent-dim "$LATENT" --decoder-latent-input) ;;
  transformer)
    LM_NAME=transformer_lm; VAE_ARCH=vrae_transformer
    SIZES="$LAYERS layers of $EMBED, $HEADS heads, FFN $((4 * EMBED)), latent $LATENT"
    if [ "$ENC_LAYERS" != "$LAYERS" ]; then SIZES+=", $ENC_LAYERS-layer VAE encoder"; fi
    # warmed up over a tenth of the updates (converge: WARMUP, 4000), then 1/sqrt(update)
    COMMON+=(--lr-scheduler inverse_sqrt --warmup-updates "${WARMUP:-$((UPDATES / 10 + 1))}" --warmup-init-lr 1e-07)
    # transformer_lm keeps 512-d input/output embeddings (projected to the model size)
    # unless told otherwise; the VAE's decoder has EMBED-d ones.  Both are post-norm:
    # fairseq 0.12.2 builds transformer_lm's layers post-norm from the command line
    LM=(--arch transformer_lm --decoder-embed-dim "$EMBED" --decoder-ffn-embed-dim $((4 * EMBED))
      --decoder-input-dim "$EMBED" --decoder-output-dim "$EMBED"
      --decoder-layers "$LAYERS" --decoder-attention-heads "$HEADS" --share-decoder-input-output-embed
      --tokens-per-sample 512)
    VAE=(--user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm --arch vrae_transformer --criterion vrae_elbo
      --embed-dim "$EMBED" --ffn-embed-dim $((4 * EMBED)) --encoder-layers "$ENC_LAYERS"
      --decoder-layers "$LAYERS" --attention-heads "$HEADS" --latent-dim "$LATENT") ;;
  *) echo "FAMILY must be lstm or transformer, got '$FAMILY'" >&2; exit 2 ;;
esac
# the schedules of --vae-recipe are fractions of the run, which converge does not fix
needs_updates() {
  if [ "$UPDATES" -le 0 ]; then
    echo "recipe $1 scales its KL schedule to a number of updates; the converge budget has none (use bn-vae)" >&2; exit 2
  fi
}


# the file that says a model was evaluated on $SPLIT ("evaluated" for test, as before)
marker() { if [ "$SPLIT" = test ]; then echo evaluated; else echo "evaluated-$SPLIT"; fi; }

evaluate() {
  local name="$1"; shift
  if [ -f "$OUT/$name/$(marker)" ]; then return; fi
  fairseq-validate "$BIN" --path "$OUT/$name/$CHECKPOINT" --valid-subset "$SPLIT" \
    --max-tokens "$MAX_TOKENS" "${DEVICE[@]}" "$@" >"$OUT/$name/$SPLIT.log" 2>&1 || {
    tail -20 "$OUT/$name/$SPLIT.log" >&2; echo "evaluating $name failed" >&2; exit 1; }
  touch "$OUT/$name/$(marker)"
}

if [ "$RUN_LM" != 0 ]; then
  echo "== $LM_NAME (fairseq), one sentence per sample"
  train "$LM_NAME" --task language_modeling --sample-break-mode eos "${LM[@]}" \
    --criterion cross_entropy --max-update "$UPDATES" "${COMMON[@]}"
  evaluate "$LM_NAME" --task language_modeling --sample-break-mode eos
fi

for recipe in $RECIPES; do
  echo "== $VAE_ARCH, recipe $recipe"
  case "$recipe" in
    bowman|cyclical|anneal-free-bits)  # the criterion's --vae-recipe (criterions/recipes.py)
      needs_updates "$recipe"
      train "$recipe" "${VAE[@]}" --vae-recipe "$recipe" --max-update "$UPDATES" "${COMMON[@]}" ;;
    free-bits)  # autoencoder pre-training, fresh decoder, then anneal-free-bits (Li et al. 2019)
      needs_updates "$recipe"
      pre=$((UPDATES / 4))
      train free-bits-ae "${VAE[@]}" --kl-schedule constant --kl-weight 0 \
        --max-update "$pre" "${COMMON[@]}"
      "$PYTHON" "$REPO_ROOT/scripts/reset_decoder.py" "$OUT/free-bits-ae/checkpoint_last.pt" \
        "$OUT/free-bits-ae/encoder_only.pt" --seed "$SEED"
      train free-bits "${VAE[@]}" --finetune-from-model "$OUT/free-bits-ae/encoder_only.pt" \
        --vae-recipe anneal-free-bits --max-update $((UPDATES - pre)) "${COMMON[@]}"
      cat "$OUT/free-bits-ae/wall" >>"$OUT/free-bits/wall"
      cp "$OUT/free-bits-ae/train.log" "$OUT/free-bits/pretrain.log" ;;
    bn-vae)  # batch-normalised posterior means, fixed scale gamma, beta = 1 throughout (Zhu et al. 2020)
      train bn-vae "${VAE[@]}" --posterior-bn-gamma "$BN_GAMMA" --kl-schedule constant \
        --max-update "$UPDATES" "${COMMON[@]}" ;;
    bn-vae-from-lm)  # bn-vae with the decoder (and the encoder's embeddings) from the LM's best checkpoint
      if [ ! -f "$OUT/$LM_NAME/trained" ]; then
        echo "bn-vae-from-lm starts from $OUT/$LM_NAME/checkpoint_best.pt: train the LM first (RECIPES=\"\")" >&2; exit 2
      fi
      WARM=(--load-pretrained-decoder-from "$OUT/$LM_NAME/checkpoint_best.pt" --load-pretrained-encoder-embed)
      [ "$FAMILY" = lstm ] || WARM+=(--latent-injection embedding)
      train bn-vae-from-lm "${VAE[@]}" "${WARM[@]}" --posterior-bn-gamma "$BN_GAMMA" --kl-schedule constant \
        --max-update "$UPDATES" "${COMMON[@]}" ;;
    *) echo "unknown recipe $recipe (bowman, cyclical, free-bits, anneal-free-bits, bn-vae, bn-vae-from-lm)" >&2; exit 2 ;;
  esac
  evaluate "$recipe" --user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm --iw-samples "$IW_SAMPLES"
done

MODELS=()
for name in "$LM_NAME" $RECIPES; do
  if [ -f "$OUT/$name/$(marker)" ]; then MODELS+=("$name"); fi
done
"$PYTHON" "$REPO_ROOT/scripts/compare_table.py" "$OUT" "${MODELS[@]}" --vae-arch "$VAE_ARCH" \
  --split "$SPLIT" --caption "$SPLIT split of $BIN; $(if [ "$BUDGET" = converge ]; then echo "best checkpoint, early stopping after $PATIENCE epochs without gain (cap $MAX_EPOCH), batches of $BATCH_SENTENCES sentences"; else echo "$UPDATES updates of $MAX_TOKENS tokens"; fi); $SIZES; IW-PPL from $IW_SAMPLES samples" \
  | tee "$OUT/results$([ "$SPLIT" = test ] || echo "-$SPLIT").md"
