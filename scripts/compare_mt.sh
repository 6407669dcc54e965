#!/usr/bin/env bash
# Translation bench: fairseq's transformer, translation_moe (hMoElp, K experts) and our
# conditional VAE (cvae_transformer) at the same sizes and number of epochs on a pair
# prepared by scripts/prepare_pairs.sh; test BLEU (beam 5, sacreBLEU on detokenised
# text), diversity at K (diversity.py) and training speed, printed as one markdown table.
#
#   bash scripts/compare_mt.sh <bin-dir from prepare_pairs.sh>
#
# Environment overrides: EPOCHS (10), K (5), LAYERS (3), EMBED (256), FFN (512), HEADS (4),
# MAX_TOKENS (4096), LR (0.001), WARMUP (300), DROPOUT (0.3), SEED (1), SYSTEMS
# ("transformer moe cvae"; also "continued", below), COMPARE_DIR, EXTRA_TRAIN_FLAGS,
# CVAE_FLAGS (the VAE's criterion and latent options, default below), IW_SAMPLES (20, the
# CVAE's test-set bound), and the
# quality-diversity front's knobs: TOPK ("3 10") and TOPP ("0.9") for the transformer's
# sampling, TEMPERATURES ("0.5 1 1.5 2") for the CVAE's --prior-temperature (its beam K-best
# and the MoE's experts are points too); quality_front.py writes the front's table and plot
# to COMPARE_DIR/front.md and front.png.
#
# BUDGET=converge is the bench at convergence: the transformer trains until PATIENCE (3)
# epochs pass without a lower validation loss (cap MAX_EPOCH, 60) and is scored from its
# checkpoint_best.pt (more training no longer helps it); the MoE trains from scratch for
# as many epochs as the transformer ran; the CVAE starts from the transformer's best
# (--load-pretrained-encoder-from/--load-pretrained-decoder-from, with --latent-injection output
# unless CVAE_FLAGS sets another; docs/translation.md)
# and is fine-tuned for CVAE_EPOCHS (5) more with the transformer's inverse-square-root
# schedule restarted, CVAE_LR (0.0005) as its peak (CVAE_SCHEDULE=restart); with
# CVAE_SCHEDULE=carry-on, at a fixed rate after CVAE_WARMUP (50) updates of warm-up: CVAE_LR,
# by default the rate the transformer's best epoch ended at (with --warm-start-optimizer in
# CVAE_FLAGS its Adam state comes along: fine-tuning then carries on as the transformer would).  A CVAE trained with --prior-draw-slots has its draws
# decoded with --latent-mode prior-slots (its K fixed slots), else prior-sample.  SYSTEMS=continued is the
# transformer's own baseline at the CVAE's epochs: its last checkpoint (optimizer and
# schedule included) trained CVAE_EPOCHS more, scored like the transformer, for when the
# transformer stopped at the cap rather than early.  Like
# compare.sh, finished steps are skipped when run again, and an interrupted training
# resumes; several SYSTEMS may run at once as separate invocations on one COMPARE_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh" >/dev/null

if [ $# -lt 1 ] || [ ! -f "$1/prepare.json" ]; then
  echo "usage: bash scripts/compare_mt.sh <bin-dir written by scripts/prepare_pairs.sh>" >&2
  exit 2
fi
BIN="$(cd "$1" && pwd)"
read -r SRC TGT GEN_FLAGS < <("$PYTHON" -c "import json, sys; p = json.load(open(sys.argv[1])); print(p['src_lang'], p['tgt_lang'], p['generation_flags'])" "$BIN/prepare.json")
read -r -a GEN_FLAGS <<< "$GEN_FLAGS"
EPOCHS="${EPOCHS:-10}"; K="${K:-5}"; LAYERS="${LAYERS:-3}"; EMBED="${EMBED:-256}"; FFN="${FFN:-512}"
HEADS="${HEADS:-4}"; MAX_TOKENS="${MAX_TOKENS:-4096}"; LR="${LR:-0.001}"; WARMUP="${WARMUP:-300}"
DROPOUT="${DROPOUT:-0.3}"; SEED="${SEED:-1}"; SYSTEMS="${SYSTEMS:-transformer moe cvae}"
IW_SAMPLES="${IW_SAMPLES:-20}"; BUDGET="${BUDGET:-epochs}"; PATIENCE="${PATIENCE:-3}"
MAX_EPOCH="${MAX_EPOCH:-60}"; CVAE_EPOCHS="${CVAE_EPOCHS:-5}"; CVAE_LR="${CVAE_LR:-}"
CVAE_WARMUP="${CVAE_WARMUP:-50}"; CVAE_SCHEDULE="${CVAE_SCHEDULE:-restart}"
case "$CVAE_SCHEDULE" in carry-on|restart) ;; *) echo "CVAE_SCHEDULE must be carry-on or restart, got '$CVAE_SCHEDULE'" >&2; exit 2 ;; esac
case "$BUDGET" in epochs|converge) ;; *) echo "BUDGET must be epochs or converge, got '$BUDGET'" >&2; exit 2 ;; esac
TOPK="${TOPK:-3 10}"; TOPP="${TOPP:-0.9}"; TEMPERATURES="${TEMPERATURES:-0.5 1 1.5 2}"
read -r -a CVAE_FLAGS <<< "${CVAE_FLAGS:---latent-dim 32 --kl-schedule linear --kl-warmup-updates 600 --free-bits 0.1 --bow-loss-weight 1}"
DRAWS=prior-sample; DRAWN="prior samples"
case " ${CVAE_FLAGS[*]} " in *" --prior-draw-slots "*) DRAWS=prior-slots; DRAWN="prior slots" ;; esac
OUT="${COMPARE_DIR:-$REPO_ROOT/compare_output/mt}"
read -r -a EXTRA <<< "${EXTRA_TRAIN_FLAGS:-}"
MOE_DIR="$("$PYTHON" -c "import fairseq, os; print(os.path.join(os.path.dirname(fairseq.__file__), 'examples', 'translation_moe', 'translation_moe_src'))")"
mkdir -p "$OUT"
source "$REPO_ROOT/scripts/compare_lib.sh"
if [ "$BUDGET" = converge ]; then
  echo "compare_mt: $BIN ($SRC -> $TGT), the transformer to convergence (patience $PATIENCE, cap $MAX_EPOCH epochs), K = $K, output in $OUT"
else
  echo "compare_mt: $BIN ($SRC -> $TGT), $EPOCHS epochs, K = $K, output in $OUT"
fi

COMMON=(--task translation -s "$SRC" -t "$TGT" --arch transformer --share-all-embeddings
  --encoder-layers "$LAYERS" --decoder-layers "$LAYERS" --encoder-embed-dim "$EMBED" --decoder-embed-dim "$EMBED"
  --encoder-ffn-embed-dim "$FFN" --decoder-ffn-embed-dim "$FFN" --encoder-attention-heads "$HEADS"
  --decoder-attention-heads "$HEADS" --dropout "$DROPOUT" --optimizer adam --adam-betas '(0.9, 0.98)'
  --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" --clip-norm 0.0
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens "$MAX_TOKENS"
  --seed "$SEED" --num-workers 0 --log-format json --log-interval 50
  --no-epoch-checkpoints "${DEVICE[@]}" "${EXTRA[@]}")
FIXED=(--max-epoch "$EPOCHS" --disable-validation)  # a system's epochs when it does not early-stop
MOE=(--task translation_moe --user-dir "$MOE_DIR" --method hMoElp --mean-pool-gating-network
  --num-experts "$K")

checkpoint() {  # checkpoint NAME: the one a system is scored from
  if [ "$BUDGET" = converge ] && [ "$1" = transformer ]; then echo "$OUT/$1/checkpoint_best.pt"
  else echo "$OUT/$1/checkpoint_last.pt"; fi
}

transformer_epochs() {  # the last and the best epoch of the converged transformer
  [ -f "$OUT/transformer/trained" ] || {
    echo "BUDGET=converge: the MoE, the CVAE and the continued transformer follow the converged transformer; run SYSTEMS=transformer first" >&2; exit 2; }
  "$PYTHON" -c "import sys; from fairseq_vrae.fairseq_output import trained_epochs; print(*trained_epochs(sys.argv[1]))" \
    "$OUT/transformer/train.log"
}

generate() {  # generate NAME OUTPUT ARGS...: test split, plain text in and out
  local name="$1" output="$2"; shift 2
  [ -s "$OUT/$name/$output" ] && return
  fairseq-generate "$BIN" --path "$(checkpoint "$name")" --gen-subset test -s "$SRC" -t "$TGT" \
    --max-tokens "$MAX_TOKENS" --scoring sacrebleu "${GEN_FLAGS[@]}" "${DEVICE[@]}" "$@" \
    >"$OUT/$name/$output.tmp" 2>"$OUT/$name/$output.log" || {
    tail -20 "$OUT/$name/$output.log" >&2; echo "generating with $name failed" >&2; exit 1; }
  mv "$OUT/$name/$output.tmp" "$OUT/$name/$output"
}

reuse() {  # reuse NAME OUTPUT POINT: an output that is already a point of the front
  mkdir -p "$OUT/$1/front"
  [ -s "$OUT/$1/front/$3" ] || cp "$OUT/$1/$2" "$OUT/$1/front/$3"
}

score() {  # score NAME DECODING FILES...: diversity.py on the detokenised D- lines
  local name="$1" decoding="$2"; shift 2
  "$PYTHON" "$REPO_ROOT/scripts/diversity.py" "$@" --name "$name" --json "$OUT/$name/$decoding.diversity.json" >/dev/null
}

decode_transformer() {  # decode_transformer NAME: beam 5, the K-best list and the sampling points
  local name="$1" k p
  generate "$name" beam5.out --beam 5
  grep -h "BLEU" "$OUT/$name/beam5.out" >"$OUT/$name/test.bleu"
  generate "$name" nbest.out --beam "$K" --nbest "$K"
  score "$name" "beam $K, $K-best" "$OUT/$name/nbest.out"
  generate "$name" sampling.out --beam "$K" --nbest "$K" --sampling --sampling-topk 10 --seed "$SEED"
  score "$name" "top-10 sampling" "$OUT/$name/sampling.out"
  reuse "$name" nbest.out "beam-$K.out"
  for k in $TOPK; do
    if [ "$k" = 10 ]; then reuse "$name" sampling.out topk-10.out; continue; fi
    generate "$name" "front/topk-$k.out" --beam "$K" --nbest "$K" --sampling --sampling-topk "$k" --seed "$SEED"
  done
  for p in $TOPP; do
    generate "$name" "front/topp-$p.out" --beam "$K" --nbest "$K" --sampling --sampling-topp "$p" --seed "$SEED"
  done
}

for system in $SYSTEMS; do
  case "$system" in
    transformer)
      echo "== transformer (fairseq)"
      if [ "$BUDGET" = converge ]; then
        train transformer "${COMMON[@]}" --max-epoch "$MAX_EPOCH" --patience "$PATIENCE"
      else
        train transformer "${COMMON[@]}" "${FIXED[@]}"
      fi
      decode_transformer transformer ;;
    continued)
      echo "== transformer continued for $CVAE_EPOCHS epochs from its last checkpoint (the CVAE's baseline at equal epochs)"
      epochs="$(transformer_epochs)"; read -r last _ <<< "$epochs"
      mkdir -p "$OUT/continued"
      [ -f "$OUT/continued/checkpoint_last.pt" ] || cp "$OUT/transformer/checkpoint_last.pt" "$OUT/continued/checkpoint_last.pt"
      train continued "${COMMON[@]}" --max-epoch "$((last + CVAE_EPOCHS))" --disable-validation
      decode_transformer continued ;;
    moe)
      echo "== translation_moe (fairseq example), hMoElp, $K experts"
      if [ "$BUDGET" = converge ]; then
        epochs="$(transformer_epochs)"; read -r last _ <<< "$epochs"
        FIXED=(--max-epoch "$last" --disable-validation)
      fi
      train moe "${COMMON[@]}" "${FIXED[@]}" "${MOE[@]}" --ddp-backend legacy_ddp
      files=()
      for expert in $(seq 0 $((K - 1))); do
        generate moe "expert$expert.out" --beam 5 "${MOE[@]}" --gen-expert "$expert"
        files+=("$OUT/moe/expert$expert.out")
      done
      score moe "one per expert, beam 5" "${files[@]}"
      mkdir -p "$OUT/moe/front"
      [ -s "$OUT/moe/front/experts-$K.out" ] || cat "${files[@]}" >"$OUT/moe/front/experts-$K.out" ;;
    cvae)
      echo "== cvae_transformer (fairseq_vrae): prior mean, posterior mean, $K $DRAWN"
      VAE=(--user-dir "$REPO_ROOT/fairseq_vrae")
      if [ "$BUDGET" = converge ]; then
        epochs="$(transformer_epochs)"; read -r _ best_epoch <<< "$epochs"
        best="$OUT/transformer/checkpoint_best.pt"
        if [ "$CVAE_SCHEDULE" = restart ]; then
          SCHEDULE=(--lr "${CVAE_LR:-0.0005}")
        else
          [ -n "$CVAE_LR" ] || CVAE_LR="$("$PYTHON" -c "import sys; from fairseq_vrae.fairseq_output import epoch_learning_rate; print(epoch_learning_rate(sys.argv[1], int(sys.argv[2])))" \
            "$OUT/transformer/train.log" "$best_epoch")"
          SCHEDULE=(--lr-scheduler fixed --warmup-updates "$CVAE_WARMUP" --lr "$CVAE_LR")
        fi
        FIXED=(--max-epoch "$CVAE_EPOCHS" --disable-validation "${SCHEDULE[@]}" --latent-injection output
          --load-pretrained-encoder-from "$best" --load-pretrained-decoder-from "$best")
      fi
      # (the last --task wins: latent_translation trains as translation does, and takes
      # --warm-start-optimizer in CVAE_FLAGS)
      train cvae "${COMMON[@]}" "${FIXED[@]}" "${VAE[@]}" --task latent_translation --arch cvae_transformer \
        --criterion vrae_elbo --label-smoothing 0.1 "${CVAE_FLAGS[@]}"
      generate cvae beam5.out --beam 5 "${VAE[@]}" --task latent_translation --latent-mode prior-mean
      grep -h "BLEU" "$OUT/cvae/beam5.out" >"$OUT/cvae/test.bleu"
      generate cvae posterior.out --beam 5 "${VAE[@]}" --task latent_translation --latent-mode posterior-mean
      grep -h "BLEU" "$OUT/cvae/posterior.out" >"$OUT/cvae/posterior.bleu"
      generate cvae samples.out --beam 5 "${VAE[@]}" --task latent_translation --latent-mode "$DRAWS" \
        --samples-per-source "$K" --seed "$SEED"
      score cvae "$K $DRAWN, beam 5" "$OUT/cvae/samples.out"
      for t in $TEMPERATURES; do
        if [ "$t" = 1 ]; then reuse cvae samples.out temperature-1.out; continue; fi
        mkdir -p "$OUT/cvae/front"
        generate cvae "front/temperature-$t.out" --beam 5 "${VAE[@]}" --task latent_translation \
          --latent-mode "$DRAWS" --samples-per-source "$K" --seed "$SEED" --prior-temperature "$t"
      done
      if [ ! -s "$OUT/cvae/test.log" ]; then
        fairseq-validate "$BIN" "${VAE[@]}" --task latent_translation -s "$SRC" -t "$TGT" \
          --path "$(checkpoint cvae)" --valid-subset test --iw-samples "$IW_SAMPLES" \
          --max-tokens "$MAX_TOKENS" "${DEVICE[@]}" >"$OUT/cvae/test.log.tmp" 2>&1 || {
          tail -20 "$OUT/cvae/test.log.tmp" >&2; echo "evaluating cvae failed" >&2; exit 1; }
        mv "$OUT/cvae/test.log.tmp" "$OUT/cvae/test.log"
      fi ;;
    *) echo "unknown system $system (transformer, continued, moe, cvae)" >&2; exit 2 ;;
  esac
done

BUDGET_TEXT="$EPOCHS epochs each"; BUDGET_TITLE="$EPOCHS epochs"
if [ "$BUDGET" = converge ] && [ -f "$OUT/transformer/trained" ]; then
  epochs="$(transformer_epochs)"; read -r last best <<< "$epochs"
  BUDGET_TEXT="transformer: best of $last epochs (epoch $best; early stopping on validation loss, patience $PATIENCE, cap $MAX_EPOCH)"
  case " $SYSTEMS " in *" continued "*) BUDGET_TEXT+="; continued: its epoch $last + $CVAE_EPOCHS" ;; esac
  case " $SYSTEMS " in *" moe "*) BUDGET_TEXT+="; MoE: $last epochs" ;; esac
  case " $SYSTEMS " in *" cvae "*) BUDGET_TEXT+="; CVAE: the transformer's best + $CVAE_EPOCHS epochs of fine-tuning (${CVAE_SCHEDULE} schedule)" ;; esac
  BUDGET_TITLE="transformer: best epoch $best of $last, CVAE + $CVAE_EPOCHS"
fi
MOE_NOTE=""; case " $SYSTEMS " in *" moe "*) MOE_NOTE=" The MoE's test BLEU is its average BLEU over experts." ;; esac
"$PYTHON" "$REPO_ROOT/scripts/compare_mt_table.py" "$OUT" $SYSTEMS \
  --caption "test split of $BIN ($SRC -> $TGT); K = $K; $BUDGET_TEXT; batches of $MAX_TOKENS tokens; $LAYERS + $LAYERS layers of $EMBED, $HEADS heads, FFN $FFN; sacreBLEU on detokenised text.$MOE_NOTE" \
  | tee "$OUT/results.md"
"$PYTHON" "$REPO_ROOT/scripts/quality_front.py" "$OUT" --png "$OUT/front.png" \
  --title "test split of $(basename "$BIN"), K = $K, $BUDGET_TITLE" >"$OUT/front.md"
echo "quality-diversity front: $OUT/front.md, $OUT/front.png"
