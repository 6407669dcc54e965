"""fairseq-preprocess -> fairseq-train -> resume, in process, on a tiny corpus."""

import math
import os

import pytest
import torch

import helpers


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("corpus"))
    return helpers.binarize(
        workdir,
        {"train": helpers.random_sentences(80, seed=0), "valid": helpers.random_sentences(12, seed=1)},
    )


SCHEDULE = ["--kl-schedule", "linear", "--kl-warmup-updates", "8", "--word-dropout", "0.3"]


def by_update(records):
    return {int(r["num_updates"]): r for r in helpers.train_inner_records(records)}


def test_resume_continues_the_update_count_and_the_kl_weight(data, tmp_path):
    straight = by_update(
        helpers.run_train(helpers.vrae_train_args(data, str(tmp_path / "a"), SCHEDULE + ["--max-update", "6"]))
    )
    assert sorted(straight) == [1, 2, 3, 4, 5, 6]
    # update k is computed with beta(k - 1) = (k - 1) / 8
    for update, record in straight.items():
        assert float(record["kl_weight"]) == pytest.approx((update - 1) / 8, abs=1e-4)
        assert float(record["kl"]) > 0

    save_dir = str(tmp_path / "b")
    first = by_update(helpers.run_train(helpers.vrae_train_args(data, save_dir, SCHEDULE + ["--max-update", "3"])))
    assert sorted(first) == [1, 2, 3]
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 3

    resumed = by_update(helpers.run_train(helpers.vrae_train_args(data, save_dir, SCHEDULE + ["--max-update", "6"])))
    assert sorted(resumed) == [4, 5, 6]
    for update in (4, 5, 6):
        assert float(resumed[update]["kl_weight"]) == float(straight[update]["kl_weight"])
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 6


def test_validation_reports_the_true_bound(data, tmp_path):
    save_dir = tmp_path / "c"
    records = helpers.run_train(
        helpers.vrae_train_args(
            data, str(save_dir),
            ["--kl-schedule", "constant", "--kl-weight", "0.2", "--word-dropout", "0.5", "--free-bits", "0.5", "--max-update", "4"],
        )
    )
    valid = [r for r in records if r.get("_logger") == "valid"][-1]
    assert float(valid["valid_kl_weight"]) == 1.0
    # the closed-form KL of the validation posteriors, not the free-bits floor (0.5 x 4)
    mu, logvar = helpers.posteriors(data, str(save_dir / "checkpoint_last.pt"), "valid")
    kl = float(0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean())
    assert kl < 2.0 and float(valid["valid_kl"]) == pytest.approx(kl, abs=2e-3)
    # the loss (computed in the criterion) is rec + KL without beta or the floor:
    # 2 ** loss (bits per token) is the bound's perplexity
    assert 2 ** float(valid["valid_loss"]) == pytest.approx(float(valid["valid_ppl"]), rel=2e-3)
    train = [r for r in records if r.get("_logger") == "train_inner"]
    assert all(float(r["kl_weight"]) == pytest.approx(0.2) for r in train)


def test_validation_ppl_falls_as_the_model_trains(data, tmp_path):
    records = helpers.run_train(
        helpers.vrae_train_args(data, str(tmp_path / "d"), ["--kl-schedule", "constant", "--max-epoch", "3"])
    )
    ppl = [float(r["valid_ppl"]) for r in records if r.get("_logger") == "valid"]
    assert len(ppl) == 3 and ppl[-1] < ppl[0]


def test_bf16_training_on_cpu_stays_finite_and_learns(data, tmp_path):
    records = helpers.train_inner_records(helpers.run_train(helpers.vrae_train_args(
        data, str(tmp_path / "bf16"), ["--bf16", "--max-update", "12", "--kl-schedule", "constant"]
    )))
    losses = [float(r["loss"]) for r in records]
    assert len(losses) == 12
    assert all(math.isfinite(v) for v in losses)
    assert all(math.isfinite(float(r["kl"])) and float(r["kl"]) >= 0 for r in records)
    assert sum(losses[-3:]) < sum(losses[:3])


def test_memory_efficient_fp16_training_on_cpu_goes_through_the_loss_scaler(data, tmp_path):
    """The fp16 model and fairseq's scaled backward, as on a GPU.  (fairseq's overflow
    handler itself needs CUDA, so the initial scale is 1 here: no overflow to skip.)"""
    save_dir = tmp_path / "fp16"
    records = helpers.train_inner_records(helpers.run_train(helpers.vrae_train_args(
        data, str(save_dir),
        ["--memory-efficient-fp16", "--fp16-init-scale", "1", "--max-update", "12", "--kl-schedule", "constant"],
    )))
    losses = [float(r["loss"]) for r in records]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert all("loss_scale" in r for r in records)  # fairseq's fp16 optimizer did the backward
    assert all(math.isfinite(float(r["kl"])) and float(r["kl"]) >= 0 for r in records)
    assert sum(losses[-3:]) < sum(losses[:3])
    # fairseq saves float32 copies; the weights trained were fp16, so every value is one
    state = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    weights = [v for v in state["model"].values() if v.is_floating_point()]
    assert weights and all(torch.equal(v, v.half().float()) for v in weights)


def test_vrae_trains_under_fairseqs_translation_task_with_word_dropout(tmp_path):
    """The VAE behaviour belongs to the model and the criterion: fairseq's stock
    translation task (no vrae_lm in sight) trains it, with the KL schedule ticking,
    word dropout on the decoder's dictionary and --iw-samples at validation."""
    sentences = helpers.random_sentences(60, seed=5)
    data = helpers.binarize_pair(str(tmp_path / "pair"), {
        "train": list(zip(sentences, sentences)), "valid": list(zip(sentences[:10], sentences[:10])),
    })
    argv = helpers.vrae_train_args(data, str(tmp_path / "checkpoints"), [
        "--max-update", "6", "--kl-schedule", "linear", "--kl-warmup-updates", "4", "--word-dropout", "0.5",
        "--iw-samples", "4", "-s", "en", "-t", "de",
    ])
    argv[argv.index("--task") + 1] = "translation"
    records = helpers.run_train(argv)
    inner = by_update(records)
    assert sorted(inner) == [1, 2, 3, 4, 5, 6]
    assert [float(inner[u]["kl_weight"]) for u in range(1, 7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    valid = [r for r in records if r.get("_logger") == "valid"][-1]
    assert float(valid["valid_kl_weight"]) == 1.0
    assert float(valid["valid_iw_nll"]) <= float(valid["valid_elbo"]) + 0.5
    assert "valid_mi" in valid and "valid_au" in valid


def test_resuming_with_another_max_update_keeps_the_cyclical_schedule(data, tmp_path):
    """The cycles span --max-update of the run that started them: a resume with a
    larger --max-update continues that schedule instead of stretching it mid-run."""
    save_dir = str(tmp_path / "cyclical")
    schedule = ["--kl-schedule", "cyclical", "--kl-cycles", "2", "--kl-cycle-rising", "0.5"]
    first = by_update(helpers.run_train(helpers.vrae_train_args(data, save_dir, schedule + ["--max-update", "4"])))
    # 2 cycles over 4 updates: beta(t) for t = 0..3 is 0, 1, 0, 1
    assert [float(first[u]["kl_weight"]) for u in (1, 2, 3, 4)] == [0.0, 1.0, 0.0, 1.0]
    resumed = by_update(helpers.run_train(helpers.vrae_train_args(data, save_dir, schedule + ["--max-update", "8"])))
    # the 4-update schedule is over: beta = 1 (spread over 8 updates it would restart at 0)
    assert [float(resumed[u]["kl_weight"]) for u in (5, 6, 7, 8)] == [1.0, 1.0, 1.0, 1.0]


def test_the_mutual_information_meter_holds_one_split_however_many_validations(data, tmp_path):
    from fairseq import metrics

    records = helpers.run_train(helpers.vrae_train_args(
        data, str(tmp_path / "mi"), ["--max-epoch", "4", "--iw-samples", "2", "--kl-schedule", "constant"]
    ))
    valid = [r for r in records if r.get("_logger") == "valid"]
    assert len(valid) == 4 and all(math.isfinite(float(r["valid_mi"])) for r in valid)
    # fairseq's run-long "valid" aggregator: the posteriors of the last pass only (12 sentences)
    meter = metrics.get_meter("valid", "mi")
    assert sum(part.size(0) for part in meter.mu) == 12


def test_bn_vae_validation_normalises_like_training_from_the_first_updates(tmp_path):
    """BN-VAE's bound (latent_dim * gamma^2 / 2) holds for the training batches from the
    first update; the running statistics that evaluation uses must hold it too, not lag
    behind at their initial values while the raw posterior means are still small."""
    data = helpers.binarize(
        str(tmp_path / "corpus"),
        {"train": helpers.random_sentences(3000, seed=0), "valid": helpers.random_sentences(200, seed=1)},
    )
    gamma, latent_dim = 0.6, 32
    argv = helpers.vrae_train_args(data, str(tmp_path / "bn"), [
        "--posterior-bn-gamma", str(gamma), "--kl-schedule", "constant", "--max-update", "40",
        "--lr", "0.001", "--max-tokens", "2048", "--latent-dim", str(latent_dim), "--dropout", "0.1",
        "--embed-dim", "256", "--encoder-hidden-size", "256", "--decoder-hidden-size", "256",
        "--log-interval", "10", "--validate-interval-updates", "40",
    ])
    records = helpers.run_train(argv)
    bound = latent_dim * gamma**2 / 2
    train_kl = [float(r["kl"]) for r in helpers.train_inner_records(records)]
    assert train_kl and min(train_kl) >= bound - 0.05
    valid = [r for r in records if r.get("_logger") == "valid"]
    assert valid and float(valid[-1]["valid_kl"]) >= bound - 0.5


@pytest.mark.parametrize("sentence_avg", [False, True])
def test_sentence_avg_normalises_each_batch_by_its_sentences_as_in_cross_entropy(data, tmp_path, sentence_avg):
    flags = ["--kl-schedule", "constant", "--max-update", "2"] + (["--sentence-avg"] if sentence_avg else [])
    records = helpers.run_train(helpers.vrae_train_args(data, str(tmp_path / "s"), flags))
    valid = [r for r in records if r.get("_logger") == "valid"][-1]
    # the logged loss is the summed loss (here rec + KL) over the sample size, in bits
    per_sentence = float(valid["valid_elbo"])
    per_token = math.log(float(valid["valid_ppl"]))
    expected = per_sentence if sentence_avg else per_token
    assert float(valid["valid_loss"]) * math.log(2) == pytest.approx(expected, rel=2e-3)


def test_sentence_avg_divides_the_gradient_by_the_batchs_sentences_not_its_tokens(data, tmp_path):
    # one update from the same start and noise: fairseq divides the summed gradient by the
    # criterion's sample size, so the logged gradient norms differ by tokens / sentences
    def first_update(name, flags):
        args = ["--kl-schedule", "constant", "--max-update", "1", "--disable-validation"] + flags
        return helpers.train_inner_records(helpers.run_train(helpers.vrae_train_args(data, str(tmp_path / name), args)))[0]

    per_token, per_sentence = first_update("t", []), first_update("s", ["--sentence-avg"])
    assert per_token["wpb"] == per_sentence["wpb"] and per_token["bsz"] == per_sentence["bsz"]
    ratio = float(per_token["wpb"]) / float(per_token["bsz"])
    assert ratio > 2
    assert float(per_sentence["gnorm"]) / float(per_token["gnorm"]) == pytest.approx(ratio, rel=2e-3)
