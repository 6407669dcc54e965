"""Importance-weighted NLL, mutual information and active units, and their fairseq-validate output."""

import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import helpers
from fairseq_vrae.criterions.vrae_elbo import VRAEELBOConfig, VRAEELBOCriterion
from fairseq_vrae.evaluation import ActiveUnitsMeter, MutualInformationMeter, importance_weighted_evaluation
from fairseq_vrae.vae_math import (
    active_units,
    importance_weighted_nll,
    log_normal,
    mutual_information,
)
from test_model import TinyTask, build, make_batch, make_dictionary


@pytest.fixture(scope="module")
def model_and_batch():
    dictionary = make_dictionary()
    model = build(dictionary)
    model.eval()
    return model, dictionary, make_batch(dictionary, [7, 4, 9, 3, 6], seed=3)


def test_k1_importance_weighted_nll_is_the_single_sample_negative_elbo(model_and_batch):
    model, dictionary, batch = model_and_batch
    result = importance_weighted_evaluation(
        model, batch, 1, dictionary.pad(), generator=torch.Generator().manual_seed(5)
    )
    # redo the single-sample estimate by hand with the same epsilon
    mu, logvar = result["mu"], result["logvar"]
    eps = torch.randn((mu.size(0), 1, mu.size(1)), generator=torch.Generator().manual_seed(5))[:, 0]
    z = mu + torch.exp(0.5 * logvar) * eps
    logits, _ = model.decoder(batch["net_input"]["prev_output_tokens"], encoder_out={"z": z})
    rec = F.cross_entropy(
        logits.transpose(1, 2), batch["target"], ignore_index=dictionary.pad(), reduction="none"
    ).sum(1)
    single_sample_kl = log_normal(z, mu, logvar) - log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    expected = rec + single_sample_kl
    assert torch.allclose(result["iw_nll"].float(), expected, atol=1e-4)


def test_k1_estimate_averages_to_the_closed_form_bound(model_and_batch):
    model, dictionary, batch = model_and_batch
    criterion = VRAEELBOCriterion(VRAEELBOConfig(kl_schedule="constant"), TinyTask(dictionary))
    # decode the mean: closed-form KL, rec at mu
    _, _, log = criterion(model, dict(batch, net_input=dict(batch["net_input"], sample_posterior=False)))
    estimates = torch.stack([
        importance_weighted_evaluation(
            model, batch, 1, dictionary.pad(), generator=torch.Generator().manual_seed(seed)
        )["iw_nll"].sum()
        for seed in range(200)
    ])
    # E[log q - log p] is the closed-form KL; rec averaged over z exceeds rec at mu only
    # by the curvature term, small for this posterior, so compare with a loose margin
    closed_form = float(log["rec"] + log["kl"])
    assert float(estimates.mean()) == pytest.approx(closed_form, rel=0.05)


def test_importance_weighting_never_exceeds_the_elbo_on_average(model_and_batch):
    model, dictionary, batch = model_and_batch
    def mean_over_seeds(num_samples, seeds):
        return sum(
            float(importance_weighted_evaluation(
                model, batch, num_samples, dictionary.pad(), generator=torch.Generator().manual_seed(seed)
            )["iw_nll"].sum())
            for seed in seeds
        ) / len(seeds)

    single = mean_over_seeds(1, range(300))
    weighted = mean_over_seeds(50, range(1000, 1010))
    # the posterior is not exact, so the gap is real, far beyond the K=1 seed noise
    assert weighted < single - 0.1


def test_log_mean_exp_bound_is_below_the_mean_of_its_terms():
    log_weights = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)) * 3 - 50
    bound = importance_weighted_nll(log_weights)
    assert (bound <= -log_weights.double().mean(1)).all()
    assert torch.allclose(importance_weighted_nll(log_weights[:, :1]), -log_weights[:, 0].double())
    # K equal weights give exactly that weight
    equal = torch.full((2, 7), -3.0)
    assert torch.allclose(importance_weighted_nll(equal), torch.full((2,), 3.0, dtype=torch.float64))


def test_chunking_does_not_change_the_estimate(model_and_batch):
    model, dictionary, batch = model_and_batch
    whole = importance_weighted_evaluation(
        model, batch, 12, dictionary.pad(), chunk_tokens=10**6, generator=torch.Generator().manual_seed(3)
    )
    chunked = importance_weighted_evaluation(
        model, batch, 12, dictionary.pad(), chunk_tokens=1, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(whole["iw_nll"], chunked["iw_nll"], atol=1e-5)


def synthetic_means(n=1000):
    generator = torch.Generator().manual_seed(0)
    mu = torch.zeros(n, 6)
    mu[:, :3] = torch.randn(n, 3, generator=generator)  # variance 1: active
    mu[:, 3:5] = 0.05 * torch.randn(n, 2, generator=generator)  # variance 0.0025: inactive
    mu[:, 5] = 0.7  # constant: inactive
    return mu


def test_active_units_count_dimensions_whose_mean_varies():
    mu = synthetic_means()
    assert active_units(mu.sum(0), mu.pow(2).sum(0), mu.size(0)) == 3
    assert active_units(mu.sum(0), mu.pow(2).sum(0), mu.size(0), threshold=0.001) == 5
    # accumulated over batches in a meter: same count as the whole split at once
    meter = ActiveUnitsMeter()
    for part in mu.split(97):
        meter.update(part.sum(0), part.pow(2).sum(0), part.size(0))
    assert meter.smoothed_value == 3


def test_mutual_information_is_zero_when_the_posterior_ignores_x():
    n, dim = 2000, 4
    mu = torch.full((n, dim), 0.3)
    logvar = torch.full((n, dim), -1.0)
    assert abs(mutual_information(mu, logvar, torch.Generator().manual_seed(0))) < 1e-6


def test_mutual_information_matches_the_gaussian_value_when_it_does_not():
    # mu ~ N(0, 1), sigma^2 = 0.1: z is Gaussian with I = dim / 2 * log(1.1 / 0.1)
    n, dim = 3000, 2
    mu = torch.randn(n, dim, generator=torch.Generator().manual_seed(1))
    logvar = torch.full((n, dim), math.log(0.1))
    exact = dim / 2 * math.log(1.1 / 0.1)
    estimate = mutual_information(mu, logvar, torch.Generator().manual_seed(2))
    assert estimate == pytest.approx(exact, abs=0.15)
    meter = MutualInformationMeter(seed=2)
    for part_mu, part_logvar in zip(mu.split(500), logvar.split(500)):
        meter.update(part_mu, part_logvar)
    assert meter.smoothed_value == pytest.approx(round(estimate, 3), abs=1e-3)


# --------------------------------------------------------------------------------------
# the command line


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("eval"))
    data = helpers.binarize(
        workdir,
        {
            "train": helpers.random_sentences(120, seed=0),
            "valid": helpers.random_sentences(16, seed=1),
            "test": helpers.random_sentences(24, seed=2),
        },
    )
    save_dir = os.path.join(workdir, "ckpt")
    helpers.run_train(helpers.vrae_train_args(data, save_dir, ["--max-update", "20", "--kl-schedule", "constant"]))
    return data, os.path.join(save_dir, "checkpoint_last.pt")


def parse_validate_line(output: str, subset: str) -> dict:
    lines = [line for line in output.splitlines() if f"valid on '{subset}' subset" in line]
    assert lines, output[-3000:]
    fields = lines[-1].split(f"valid on '{subset}' subset")[1].split("|")
    parsed = {}
    for item in fields:
        match = re.match(r"\s*(\S+)\s+(\S+)\s*$", item)
        if match:
            parsed[match.group(1)] = float(match.group(2))
    return parsed


def validate(trained, *extra) -> dict:
    data, checkpoint = trained
    command = [
        os.path.join(os.path.dirname(sys.executable), "fairseq-validate"), data,
        "--user-dir", helpers.USER_DIR, "--task", "vrae_lm", "--path", checkpoint,
        "--valid-subset", "test", "--iw-samples", "30", "--max-tokens", "100000", "--cpu", *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return parse_validate_line(done.stdout + done.stderr, "test")


def posteriors_of_split(trained, split):
    return helpers.posteriors(*trained, split)


def test_fairseq_validate_prints_every_metric_with_the_values_of_the_split(trained):
    metrics = validate(trained)
    for key in ("iw_nll", "iw_ppl", "elbo", "rec", "kl", "mi", "au", "ppl", "loss"):
        assert key in metrics, metrics
    # one batch holds the whole split: iw_ppl = exp(total IW-NLL / total tokens with </s>)
    assert metrics["bsz"] == 24
    assert metrics["iw_ppl"] == pytest.approx(
        math.exp(metrics["iw_nll"] * metrics["bsz"] / metrics["wpb"]), rel=1e-3
    )
    # KL, AU and MI against the posteriors of the 24 test sentences computed here
    mu, logvar = posteriors_of_split(trained, "test")
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
    assert metrics["kl"] == pytest.approx(float(kl), abs=2e-3)
    assert metrics["au"] == int((mu.var(0) >= 0.01).sum())
    from fairseq_vrae.vae_math import seeded_normal

    # the criterion draws each sentence's z from (--seed 7 of the run, sentence index)
    z = mu + torch.exp(0.5 * logvar) * seeded_normal(7 * 1_000_003 + torch.arange(24), (30, 4))[:, 0].double()
    assert math.isfinite(metrics["mi"])
    assert metrics["mi"] == pytest.approx(mutual_information(mu, logvar, z=z), abs=2e-3)
    assert metrics["iw_nll"] < metrics["elbo"] + 0.5  # a tighter bound, up to sampling noise


def test_fairseq_validate_with_an_fp16_model_matches_fp32(trained):
    """--fp16 halves the model (as on a GPU); the bound and KL stay float32 maths."""
    full, half = validate(trained), validate(trained, "--fp16")
    for key in ("iw_nll", "elbo", "rec", "kl"):
        assert math.isfinite(half[key])
        assert half[key] == pytest.approx(full[key], rel=0.01), (key, half, full)
    assert half["au"] == full["au"]
    assert (half["iw_nll"], half["elbo"]) != (full["iw_nll"], full["elbo"])  # it did run in fp16


def test_meters_survive_fairseqs_checkpoint_round_trip():
    from fairseq.logging.meters import MetersDict

    meters = MetersDict()
    mu = synthetic_means(50)
    meters.add_meter("au", ActiveUnitsMeter(), 10)
    meters["au"].update(mu.sum(0), mu.pow(2).sum(0), 50)
    meters.add_meter("mi", MutualInformationMeter(seed=3), 20)
    meters["mi"].update(mu, torch.zeros_like(mu))
    restored = MetersDict()
    restored.load_state_dict(meters.state_dict())  # looks the classes up by name
    assert restored["au"].smoothed_value == meters["au"].smoothed_value == 3
    assert math.isnan(restored["mi"].smoothed_value)  # posteriors are not kept in checkpoints
