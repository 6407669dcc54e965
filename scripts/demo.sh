#!/usr/bin/env bash
# End-to-end demo on the bundled corpus (sentences from Python's docstrings):
# set-up -> tokenise + BPE + fairseq-preprocess (fairseq_vrae.prepare_text) ->
# fairseq-train a small VAE on CPU -> fairseq-validate on the test split (bound, KL, AU)
# -> reconstructions, prior samples and a homotopy as plain text -> the figures that
# show whether z is used (scripts/demo_figures.py).
# DEMO_DIR (default demo_output/) holds everything it writes; DEMO_UPDATES sets the
# training budget (default 900 updates, about 3 minutes on 2 CPU cores);
# DEMO_LATENT_FLAGS replaces the recipe's latent and criterion flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh"

DEMO_DIR="${DEMO_DIR:-$REPO_ROOT/demo_output}"
UPDATES="${DEMO_UPDATES:-900}"
CORPUS="$REPO_ROOT/scripts/demo_data/stdlib_sentences.txt"
# BN-VAE (Zhu et al. 2020): the batch-normalised posterior means keep the KL above
# latent_dim * gamma^2 / 2 nats, so z cannot collapse; z also enters every decoder step
read -r -a LATENT <<< "${DEMO_LATENT_FLAGS:---posterior-bn-gamma 1.0 --decoder-latent-input --word-dropout 0.3 --kl-schedule linear --kl-warmup-updates $((UPDATES / 3))}"
mkdir -p "$DEMO_DIR"
cd "$DEMO_DIR"
start=$(date +%s)

echo "== prepare: sacremoses tokenisation, fastBPE (3000 merges), split, fairseq-preprocess"
rm -rf bin
"$PYTHON" -m fairseq_vrae.prepare_text --input "$CORPUS" --destdir bin --bpe-merges 3000 \
  --workers 2 2>&1 | grep -E "prepare_text|Dictionary|sents" | sed -E 's/^.*\| (INFO|WARNING) \| //' | sort -u
TEXT=(--tokenizer moses --bpe fastbpe --bpe-codes bin/bpecodes)

echo "== fairseq-train ($UPDATES updates): ${LATENT[*]}"
rm -rf checkpoints
fairseq-train bin --user-dir "$REPO_ROOT/fairseq_vrae" \
  --task vrae_lm --arch vrae_lstm --criterion vrae_elbo \
  --embed-dim 128 --encoder-hidden-size 256 --decoder-hidden-size 256 --latent-dim 32 \
  "${LATENT[@]}" \
  --optimizer adam --lr 0.002 --clip-norm 5 --dropout 0.2 \
  --max-tokens 2048 --max-update "$UPDATES" --cpu --num-workers 0 \
  --save-dir checkpoints --no-epoch-checkpoints --log-interval 100 --seed 1 \
  2>&1 | grep -E "train_inner|valid on|done training"

echo "== fairseq-validate on the test split (beta = 1: the true bound)"
fairseq-validate bin --user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm \
  --path checkpoints/checkpoint_best.pt --valid-subset test --cpu --max-tokens 4096 \
  2>&1 | grep "valid on" | sed -E 's/^.*\| valid \|/test |/' | tee validate.log
echo "(rec, kl and elbo are nats per sentence; ppl is exp of -ELBO per token, </s> included)"

MODEL=(--user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm --path checkpoints/checkpoint_best.pt --cpu)

echo "== reconstructions of the test sentences from the posterior mean (fairseq-generate, greedy); the first 5"
fairseq-generate bin "${MODEL[@]}" "${TEXT[@]}" --gen-subset test --beam 1 --batch-size 128 \
  2>/dev/null > reconstructions.txt
for i in 0 1 2 3 4; do
  printf 'input:          %s\n' "$(grep -P "^S-$i\t" reconstructions.txt | cut -f2)"
  printf 'reconstruction: %s\n' "$(grep -P "^D-$i\t" reconstructions.txt | cut -f3)"
done

echo "== 20 samples from the prior (fairseq-generate --latent-mode prior, greedy); the first 8"
fairseq-generate bin "${MODEL[@]}" "${TEXT[@]}" --latent-mode prior --num-samples 20 --seed 1 --beam 1 \
  2>/dev/null | grep -P '^D-' | sort -V > prior.txt
head -8 prior.txt | cut -f3

echo "== a homotopy between the first two test sentences (--latent-mode interpolate, greedy)"
fairseq-generate bin "${MODEL[@]}" "${TEXT[@]}" --gen-subset test --latent-mode interpolate \
  --interpolation-steps 5 --beam 1 --batch-size 128 2>/dev/null | grep -P '^D-0\t' > homotopy.txt
echo "from: $(grep -P "^S-0\t" reconstructions.txt | cut -f2)"
echo "to:   $(grep -P "^S-1\t" reconstructions.txt | cut -f2)"
cut -f3 homotopy.txt

echo "== does z carry the sentence?"
"$PYTHON" "$REPO_ROOT/scripts/demo_figures.py" --reconstructions reconstructions.txt --prior prior.txt \
  --homotopy homotopy.txt --homotopy-ends 0 1 --validate validate.log --json figures.json
echo "(demo took $(( $(date +%s) - start )) s after set-up)"
