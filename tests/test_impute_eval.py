"""scripts/impute_eval.py: the observed prefix, the adversarial classifier, and a run."""

import os

import pytest

import helpers
from conftest import load_script

impute_eval = load_script("impute_eval")


def test_the_observed_prefix_drops_the_final_fifth_and_at_least_one_word():
    assert impute_eval.observed_prefix("a b c d e f g h i j".split(), 0.2) == list("abcdefgh")
    assert impute_eval.observed_prefix(["a", "b"], 0.2) == ["a"]
    assert impute_eval.observed_prefix(["a"], 0.2) == ["a"]


def test_the_classifier_cannot_separate_copies_and_separates_a_telltale_word():
    real = helpers.random_sentences(200, seed=3)
    assert impute_eval.adversarial_error(real, list(real)) == pytest.approx(0.5)
    marked = [s + " zebra" for s in real]
    assert impute_eval.adversarial_error(real, marked) < 0.05


def test_both_models_impute_and_are_scored(tmp_path, capsys):
    data = helpers.binarize(str(tmp_path / "corpus"), {
        "train": helpers.random_sentences(80), "valid": helpers.random_sentences(8, seed=1),
        "test": helpers.random_sentences(30, seed=2),
    })
    vae_dir, lm_dir = str(tmp_path / "vae"), str(tmp_path / "lm")
    helpers.run_train(helpers.vrae_train_args(data, vae_dir, ["--max-update", "3", "--disable-validation"]))
    helpers.run_train([
        data, "--task", "language_modeling", "--arch", "lstm_lm", "--decoder-embed-dim", "16",
        "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16", "--optimizer", "adam", "--lr", "0.01",
        "--max-tokens", "200", "--max-update", "3", "--cpu", "--num-workers", "0", "--sample-break-mode", "eos",
        "--tokens-per-sample", "64", "--save-dir", lm_dir, "--distributed-world-size", "1", "--disable-validation",
    ])
    sentences = impute_eval.load_sentences(data, "test", 10, seed=1)
    vae_checkpoint, lm_checkpoint = os.path.join(vae_dir, "checkpoint_last.pt"), os.path.join(lm_dir, "checkpoint_last.pt")
    for imputed in (impute_eval.impute_with_vae(vae_checkpoint, data, helpers.USER_DIR, sentences, 0.2, 2),
                    impute_eval.impute_with_lm(lm_checkpoint, data, sentences, 0.2, 2)):
        assert len(imputed) == len(sentences)
        for sentence, completion in zip(sentences, imputed):  # the observed words are kept
            kept = impute_eval.observed_prefix(sentence.split(), 0.2)
            assert completion.split()[: len(kept)] == kept
    code = impute_eval.main([
        "--data", data, "--vae", os.path.join(vae_dir, "checkpoint_last.pt"),
        "--lm", os.path.join(lm_dir, "checkpoint_last.pt"), "--max-sentences", "20", "--beam", "2",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("20 sentences of test")
    rows = [line for line in out.splitlines() if line.startswith("| lstm_lm") or line.startswith("| vrae")]
    assert len(rows) == 2
    for row in rows:
        bleu, error = row.split("|")[2:4]
        assert 0 <= float(bleu) <= 100 and 0 <= float(error.strip().rstrip("%")) <= 100
