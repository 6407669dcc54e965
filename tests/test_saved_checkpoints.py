"""Checkpoints saved by an earlier version of the code, one per model family, load and
decode as they did then (``saved_checkpoints.py`` says how they were made), so long
runs resume and evaluate unchanged across refactorings."""

import json
import os
import tempfile

import pytest

import saved_checkpoints as saved

with open(saved.EXPECTED) as f:
    EXPECTED = json.load(f)


@pytest.fixture(scope="module")
def data():
    with tempfile.TemporaryDirectory() as workdir:
        yield {kind: saved.corpus(kind, workdir) for kind in saved.DECODINGS}


def hypotheses(lines):
    """(id, score, text) with the score rounded: the text must match exactly, the
    log-probability to 4 decimals."""
    out = []
    for line in lines:
        name, score, text = line.split("\t")
        out.append((name, round(float(score), 4), text))
    return out


@pytest.mark.parametrize("family", sorted(saved.FAMILIES))
def test_a_checkpoint_saved_earlier_decodes_and_scores_as_it_did(family, data):
    kind, _ = saved.FAMILIES[family]
    now = saved.decode(family, data[kind], os.path.join(saved.DIRECTORY, f"{family}.pt"))
    then = EXPECTED[family]
    assert set(now) == set(then)
    for mode in saved.DECODINGS[kind]:
        assert hypotheses(now[mode]) == hypotheses(then[mode]), mode
    assert now["validate_kl"] == pytest.approx(then["validate_kl"], abs=1e-3)


def load_cvae(data):
    """The saved cvae_transformer and its latent_translation task, in Python."""
    import fairseq_vrae  # noqa: F401  (registers the task and models)
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [os.path.join(saved.DIRECTORY, "cvae_transformer.pt")],
        arg_overrides={"data": data["translation"]},
    )
    return models[0].eval(), task


@pytest.mark.parametrize("inputs", ["prior-mean", "prior-sample"])
def test_the_conditional_prior_network_runs_once_per_decode(inputs, data):
    import torch

    model, _ = load_cvae(data)
    calls = []
    model.encoder.latent.prior.net.register_forward_hook(lambda *_: calls.append(1))
    src = torch.tensor([[5, 6, 7, 2], [8, 9, 5, 2]])
    extra = {"latent_seeds": torch.tensor([3, 4])} if inputs == "prior-sample" else {}
    with torch.no_grad():
        out = model.encoder(src, src_lengths=torch.tensor([4, 4]), **extra)
    assert len(calls) == 1
    # the contract still holds the prior the code came from
    mu, logvar = model.encoder.latent.prior(out["condition"], out["condition"])
    assert torch.equal(out["prior_mu"], mu) and torch.equal(out["prior_logvar"], logvar)
    if inputs == "prior-mean":
        assert torch.equal(out["z"], mu)
