#!/usr/bin/env bash
# End-to-end demo on the bundled corpus (sentences from Python's docstrings):
# set-up -> tokenise + BPE + fairseq-preprocess (fairseq_vrae.prepare_text) ->
# fairseq-train a small VAE on CPU -> fairseq-validate on the test split (bound, KL) ->
# reconstructions, prior samples and a homotopy as plain text.
# DEMO_DIR (default demo_output/) holds everything it writes; DEMO_UPDATES sets the
# training budget (default 400 updates, a few minutes on 2 CPU cores).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh"

DEMO_DIR="${DEMO_DIR:-$REPO_ROOT/demo_output}"
UPDATES="${DEMO_UPDATES:-400}"
CORPUS="$REPO_ROOT/scripts/demo_data/stdlib_sentences.txt"
mkdir -p "$DEMO_DIR"
cd "$DEMO_DIR"

echo "== prepare: sacremoses tokenisation, fastBPE (3000 merges), split, fairseq-preprocess"
rm -rf bin
"$PYTHON" -m fairseq_vrae.prepare_text --input "$CORPUS" --destdir bin --bpe-merges 3000 \
  --workers 2 2>&1 | grep -E "prepare_text|Dictionary|sents" | sed -E 's/^.*\| (INFO|WARNING) \| //' | sort -u
TEXT=(--tokenizer moses --bpe fastbpe --bpe-codes bin/bpecodes)

echo "== fairseq-train ($UPDATES updates)"
rm -rf checkpoints
fairseq-train bin --user-dir "$REPO_ROOT/fairseq_vrae" \
  --task vrae_lm --arch vrae_lstm --criterion vrae_elbo \
  --embed-dim 128 --encoder-hidden-size 256 --decoder-hidden-size 256 --latent-dim 32 \
  --kl-schedule logistic --kl-logistic-midpoint $((UPDATES * 2 / 5)) \
  --kl-logistic-steepness "$(python3 -c "print(12 / $UPDATES)")" \
  --word-dropout 0.4 --free-bits 0.1 \
  --optimizer adam --lr 0.002 --clip-norm 5 --dropout 0.2 \
  --max-tokens 2048 --max-update "$UPDATES" --cpu --num-workers 0 \
  --save-dir checkpoints --no-epoch-checkpoints --log-interval 50 --seed 1 \
  2>&1 | grep -E "train_inner|valid on|done training" 

echo "== fairseq-validate on the test split (beta = 1: the true bound)"
fairseq-validate bin --user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm \
  --path checkpoints/checkpoint_best.pt --valid-subset test --cpu --max-tokens 4096 \
  2>&1 | grep "valid on" | sed -E 's/^.*\| valid \|/test |/'
echo "(rec, kl and elbo are nats per sentence; ppl is exp of -ELBO per token, </s> included)"

MODEL=(--user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm --path checkpoints/checkpoint_best.pt --cpu)

echo "== 5 reconstructions of test sentences from the posterior mean (fairseq-generate, greedy)"
fairseq-generate bin "${MODEL[@]}" --gen-subset test --beam 1 --batch-size 128 --post-process subword_nmt \
  2>/dev/null > generate.test.txt
for i in 0 1 2 3 4; do
  printf 'input:          %s\n' "$(grep -P "^S-$i\t" generate.test.txt | cut -f2)"
  printf 'reconstruction: %s\n' "$(grep -P "^H-$i\t" generate.test.txt | cut -f3)"
done

echo "== 5 samples from the prior (fairseq-generate --latent-mode prior, greedy)"
fairseq-generate bin "${MODEL[@]}" "${TEXT[@]}" --latent-mode prior --num-samples 5 --seed 1 --beam 1 \
  2>/dev/null | grep -P '^D-' | sort -V | cut -f3

echo "== a homotopy between two sentences (fairseq-interactive --latent-mode interpolate)"
first=$(sed -n 3p "$CORPUS")
second=$(sed -n 8p "$CORPUS")
echo "from: $first"
echo "to:   $second"
printf '%s\t%s\n' "$first" "$second" | fairseq-interactive bin "${MODEL[@]}" "${TEXT[@]}" \
  --latent-mode interpolate --interpolation-steps 5 --beam 1 2>/dev/null | grep -P '^D-' | cut -f3
