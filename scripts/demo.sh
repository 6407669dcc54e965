#!/usr/bin/env bash
# End-to-end demo on the bundled corpus (sentences from Python's docstrings):
# set-up -> tokenise + BPE + fairseq-preprocess (fairseq_vrae.prepare_text) ->
# fairseq-train a small VAE on CPU -> fairseq-validate on the test split (bound, KL, AU)
# -> reconstructions, prior samples and a homotopy as plain text -> the figures that
# show whether z is used (scripts/demo_figures.py).
# It keeps the corpus's sentences of at most 12 words (4,470 of 6,253), which a small
# model learns to reconstruct within the budget.
# DEMO_DIR (default demo_output/) holds everything it writes; DEMO_UPDATES sets the
# training budget (default 1200 updates of about 75 sentences, about 3 minutes on 2 CPU cores);
# DEMO_LATENT_FLAGS replaces the recipe's latent and criterion flags; DEMO_TRAIN_FLAGS
# is appended to fairseq-train's command line, so it overrides any training flag.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh"

DEMO_DIR="${DEMO_DIR:-$REPO_ROOT/demo_output}"
UPDATES="${DEMO_UPDATES:-1200}"
CORPUS="$REPO_ROOT/scripts/demo_data/stdlib_sentences.txt"
# BN-VAE (Zhu et al. 2020): the batch-normalised posterior means keep the KL above
# latent_dim * gamma^2 / 2 = 100 nats, so z cannot collapse and carries the sentence; z also enters every decoder
# step, and word dropout makes the decoder lean on it
read -r -a TRAIN_EXTRA <<< "${DEMO_TRAIN_FLAGS:-}"
read -r -a LATENT <<< "${DEMO_LATENT_FLAGS:---posterior-bn-gamma 2.5 --decoder-latent-input --word-dropout 0.3 --kl-schedule linear --kl-warmup-updates $((UPDATES / 3))}"
mkdir -p "$DEMO_DIR"
cd "$DEMO_DIR"
start=$(date +%s)

echo "== Preparing the corpus: its sentences of at most 12 words, Moses tokenisation, fastBPE (3000 merges), a train/valid/test split and fairseq-preprocess."
rm -rf bin
awk 'NF <= 12' "$CORPUS" > corpus.txt
"$PYTHON" -m fairseq_vrae.prepare_text --input corpus.txt --destdir bin --bpe-merges 3000 \
  --workers 2 > prepare.log 2>&1
sed -nE 's/^.*\/(train|valid|test)\.txt: ([0-9]+) sents, ([0-9]+) tokens.*$/The \1 split has \2 sentences and \3 BPE tokens./p' prepare.log | sort -u
sed -nE 's/^.*Dictionary: ([0-9]+) types.*$/The dictionary has \1 types./p' prepare.log | head -n 1
TEXT=(--tokenizer moses --bpe fastbpe --bpe-codes bin/bpecodes)

echo "== Training a small VAE with fairseq-train for $UPDATES updates on the CPU, with ${LATENT[*]}."
rm -rf checkpoints
fairseq-train bin --user-dir "$REPO_ROOT/fairseq_vrae" \
  --task vrae_lm --arch vrae_gru --criterion vrae_elbo \
  --embed-dim 128 --encoder-hidden-size 128 --decoder-hidden-size 256 --latent-dim 32 \
  --encoder-bidirectional "${LATENT[@]}" \
  --optimizer adam --lr 0.003 --clip-norm 5 --dropout 0.2 --encoder-dropout-in 0.1 \
  --max-tokens 1024 --max-update "$UPDATES" --cpu --num-workers 0 \
  --save-dir checkpoints --no-epoch-checkpoints --log-interval 300 --seed 1 "${TRAIN_EXTRA[@]}" > train.log 2>&1
# one sentence per logged interval: the training batches' terms and the KL weight
sed -nE 's/^.*train_inner .* rec=([0-9.]+), kl=([0-9.]+),.* kl_weight=([0-9.]+),.* num_updates=([0-9]+),.*$/After \4 updates the training batches reconstruct at \1 nats per sentence with a KL of \2 nats (KL weight \3)./p' train.log
sed -nE 's/^.*done training in ([0-9.]+) seconds.*$/Training took \1 seconds; the checkpoint with the best validation bound is kept./p' train.log

MODEL=(--user-dir "$REPO_ROOT/fairseq_vrae" --task vrae_lm --path checkpoints/checkpoint_best.pt --cpu)
# the four commands that score and decode run two at a time (one per core); each one's
# output is printed below once all have finished
fairseq-validate bin "${MODEL[@]}" --valid-subset test --max-tokens 4096 2>&1 \
  | grep "valid on" > validate.log &
first=$!
fairseq-generate bin "${MODEL[@]}" "${TEXT[@]}" --gen-subset test --beam 5 --batch-size 128 \
  2>/dev/null > reconstructions.txt &
second=$!
wait "$first" && wait "$second"
fairseq-generate bin "${MODEL[@]}" "${TEXT[@]}" --latent-mode prior --num-samples 20 --seed 1 --beam 1 \
  2>/dev/null | grep -P '^D-' | sort -V > prior.txt &
first=$!
fairseq-generate bin "${MODEL[@]}" "${TEXT[@]}" --gen-subset test --latent-mode interpolate \
  --interpolation-steps 5 --beam 5 --batch-size 128 2>/dev/null | grep -P '^D-0\t' > homotopy.txt &
second=$!
wait "$first" && wait "$second"

echo "== Scoring the test split with fairseq-validate (KL weight 1, the true bound)."
sed -nE "s/^.*\| rec ([0-9.]+) \| kl ([0-9.]+) \| .*\| elbo ([0-9.]+) \|.*\| ppl ([0-9.]+) \| au ([0-9]+).*$/The test sentences cost \3 nats each under the bound: \1 to reconstruct them and \2 of KL; that is a perplexity of \4 per token, with \5 of 32 latent dimensions active./p" validate.log

echo "== The first 5 test sentences and their reconstructions from the posterior mean (fairseq-generate, beam 5)."
for i in 0 1 2 3 4; do
  printf 'input:          %s\n' "$(grep -P "^S-$i\t" reconstructions.txt | cut -f2)"
  printf 'reconstruction: %s\n' "$(grep -P "^D-$i\t" reconstructions.txt | cut -f3)"
done

echo "== The first 8 of 20 greedy samples from the prior (fairseq-generate --latent-mode prior)."
head -8 prior.txt | cut -f3

echo "== A homotopy between the first two test sentences, decoded at 7 points with beam 5 (--latent-mode interpolate)."
echo "from: $(grep -P "^S-0\t" reconstructions.txt | cut -f2)"
echo "to:   $(grep -P "^S-1\t" reconstructions.txt | cut -f2)"
cut -f3 homotopy.txt

echo "== Does z carry the sentence?"
"$PYTHON" "$REPO_ROOT/scripts/demo_figures.py" --reconstructions reconstructions.txt --prior prior.txt \
  --homotopy homotopy.txt --homotopy-ends 0 1 --validate validate.log --json figures.json
echo "The demo took $(( $(date +%s) - start )) seconds after set-up."
