"""vrae_transformer: fairseq's Transformer networks around the shared latent layer."""

import os
import re

import pytest
import torch

import helpers
from fairseq_vrae.criterions.vrae_elbo import VRAEELBOConfig, VRAEELBOCriterion
from fairseq_vrae.models.vrae_transformer import VRAETransformerConfig, VRAETransformerModel
from test_model import TinyTask, make_batch, make_dictionary

INJECTIONS = ["embedding", "memory", "both", "output", "embedding+output"]


def build(dictionary, fresh_shift: bool = False, **overrides):
    """A tiny model; unless ``fresh_shift``, z's embedding and output projections (zero at
    initialisation) get random weights, as training gives them."""
    cfg = VRAETransformerConfig(embed_dim=16, ffn_embed_dim=32, attention_heads=2, latent_dim=5, dropout=0.0)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    model = VRAETransformerModel.build_model(cfg, TinyTask(dictionary))
    for projection in (model.decoder.latent_to_embedding, model.decoder.latent_to_output):
        if projection is not None and not fresh_shift:
            torch.nn.init.normal_(projection.weight, std=0.5)
    return model


def test_a_fresh_embedding_shift_is_silent_but_learns():
    """At initialisation z's embedding projection is zero, so the decoder reads what a
    plain Transformer decoder reads; the projection still gets gradient."""
    dictionary = make_dictionary()
    model = build(dictionary, fresh_shift=True, latent_injection="embedding")
    batch = make_batch(dictionary, [6, 6, 6])
    prev = batch["net_input"]["prev_output_tokens"]
    model.eval()
    encoder_out = model.encoder(batch["net_input"]["src_tokens"], sample_posterior=False)
    logits, _ = model.decoder(prev, encoder_out=encoder_out)
    moved, _ = model.decoder(prev, encoder_out=dict(encoder_out, z=encoder_out["z"] + 1.0))
    assert torch.equal(logits, moved)
    logits.logsumexp(-1).sum().backward()
    assert model.decoder.latent_to_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("injection", INJECTIONS)
def test_incremental_decoding_matches_a_full_pass_and_z_matters(injection):
    dictionary = make_dictionary()
    model = build(dictionary, latent_injection=injection, decoder_layers=3).eval()
    batch = make_batch(dictionary, [6, 6, 6])
    prev = batch["net_input"]["prev_output_tokens"]
    with torch.no_grad():
        encoder_out = model.encoder(batch["net_input"]["src_tokens"], sample_posterior=False)
        full, _ = model.decoder(prev, encoder_out=encoder_out)
        state = {}
        steps = [model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0] for t in range(6)]
        other, _ = model.decoder(prev, encoder_out=dict(encoder_out, z=encoder_out["z"] + 1.0))
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert not torch.allclose(other, full, atol=1e-3)  # the decoder reads z this way


@pytest.mark.parametrize("injection", ["memory", "both"])
def test_reordering_follows_the_beam_memory_included(injection):
    dictionary = make_dictionary()
    model = build(dictionary, latent_injection=injection, decoder_layers=2).eval()
    batch = make_batch(dictionary, [7, 7, 7], seed=2)
    assert helpers.reordered_incremental_decoding_matches(model, batch, torch.tensor([2, 0, 0]))


def test_the_posterior_does_not_depend_on_padding():
    dictionary = make_dictionary()
    model = build(dictionary).eval()
    batch = make_batch(dictionary, [4, 9, 6])
    with torch.no_grad():
        together = model.encoder(batch["net_input"]["src_tokens"], sample_posterior=False)
        for row in range(3):
            length = int(batch["net_input"]["src_lengths"][row])
            alone = model.encoder(batch["net_input"]["src_tokens"][row : row + 1, :length], sample_posterior=False)
            assert torch.allclose(alone["mu"][0], together["mu"][row], atol=1e-5)
            assert torch.allclose(alone["logvar"][0], together["logvar"][row], atol=1e-5)


@pytest.mark.parametrize("options", [{"latent_injection": i} for i in INJECTIONS] + [{"share_embeddings": True, "posterior_bn_gamma": 0.6}])
def test_every_trainable_parameter_gets_a_gradient(options):
    dictionary = make_dictionary()
    model = build(dictionary, **options).train()
    criterion = VRAEELBOCriterion(VRAEELBOConfig(kl_schedule="constant", word_dropout=0.3, max_update=0), TinyTask(dictionary))
    loss, _, _ = criterion(model, make_batch(dictionary, [5, 7, 3]))
    loss.backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, parameter in trainable:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # the only frozen ones are fairseq's copies for the fused inference kernel
    frozen = {name.rsplit(".", 1)[-1] for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen <= {"in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias",
                      "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"}


def test_bf16_forward_stays_finite_with_a_float32_kl():
    dictionary = make_dictionary()
    model = build(dictionary).to(torch.bfloat16).train()
    criterion = VRAEELBOCriterion(VRAEELBOConfig(kl_schedule="constant", max_update=0), TinyTask(dictionary))
    loss, _, log = criterion(model, make_batch(dictionary, [5, 7, 3]))
    assert torch.isfinite(loss) and log["kl"].dtype == torch.float32 and torch.isfinite(log["kl"])


# --------------------------------------------------------------------------------------
# generation through the stock commands, on a model trained in the test

SENTENCES = helpers.random_sentences(20, seed=11, min_len=3, max_len=8)


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("memorise_transformer"))
    data = helpers.binarize(workdir, {"train": SENTENCES, "valid": SENTENCES[:4], "test": SENTENCES})
    save_dir = os.path.join(workdir, "checkpoints")
    argv = helpers.vrae_train_args(data, save_dir, [
        "--embed-dim", "32", "--ffn-embed-dim", "64", "--attention-heads", "2", "--latent-dim", "16",
        "--dropout", "0", "--kl-schedule", "constant", "--kl-weight", "0", "--max-tokens", "400",
        "--max-update", "300", "--lr", "0.003", "--log-interval", "100", "--no-save-optimizer-state",
        "--disable-validation",
    ])
    for size_flag in ("--encoder-hidden-size", "--decoder-hidden-size"):
        position = argv.index(size_flag)
        del argv[position : position + 2]
    argv[argv.index("--arch") + 1] = "vrae_transformer"
    helpers.run_train(argv)
    return data, save_dir


def generate(memorised, *extra):
    from test_generation import command, run

    data, save_dir = memorised
    code, out, err = run([
        command("fairseq-generate"), data, "--user-dir", helpers.USER_DIR, "--task", "vrae_lm",
        "--path", os.path.join(save_dir, "checkpoint_last.pt"), "--gen-subset", "test", "--cpu",
        "--batch-size", "7", *extra,
    ])
    assert code == 0, err[-3000:]
    return [(int(re.match(r"H-(\d+)", line).group(1)), line.split("\t")[2]) for line in out.splitlines() if line.startswith("H-")]


def test_every_generation_mode_through_fairseq_generate(memorised):
    reconstructed = dict(generate(memorised, "--beam", "4"))
    assert sum(reconstructed[i] == s for i, s in enumerate(SENTENCES)) >= 16, reconstructed
    sampled = generate(memorised, "--latent-mode", "posterior-sample", "--beam", "4", "--nbest", "2", "--seed", "3")
    assert len(sampled) == 40
    prior = generate(memorised, "--latent-mode", "prior", "--num-samples", "6", "--seed", "5", "--beam", "2")
    assert len(prior) == 6 and all(text.strip() for _, text in prior)
    assert generate(memorised, "--latent-mode", "prior", "--num-samples", "6", "--seed", "5", "--beam", "2") == prior
    path = [text for i, text in generate(memorised, "--latent-mode", "interpolate", "--interpolation-steps", "2", "--beam", "3") if i == 0]
    assert len(path) == 4 and path[0] == reconstructed[0] and path[-1] == reconstructed[1]
    imputed = dict(generate(memorised, "--latent-mode", "impute", "--beam", "3"))
    for i, sentence in enumerate(SENTENCES):
        words = sentence.split()
        kept = len(words) - max(1, round(0.2 * len(words)))
        assert imputed[i].split()[:kept] == words[:kept]
