
import pytest
import torch
from fairseq.data import Dictionary

from fairseq_vrae.criterions.vrae_elbo import VRAEELBOConfig, VRAEELBOCriterion, apply_word_dropout
from fairseq_vrae.models.vrae import VRAEConfig, VRAEModel

import helpers


class TinyTask:
    def __init__(self, dictionary):
        self.dictionary = dictionary
        self.source_dictionary = self.target_dictionary = dictionary


def make_dictionary(words=40):
    dictionary = Dictionary()
    for i in range(words):
        dictionary.add_symbol(f"w{i}")
    dictionary.finalize(padding_factor=1)
    return dictionary


def build(dictionary, **overrides):
    cfg = VRAEConfig(embed_dim=12, encoder_hidden_size=10, decoder_hidden_size=14, latent_dim=5, dropout=0.0)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return VRAEModel.build_model(cfg, TinyTask(dictionary))


def make_batch(dictionary, lengths, seed=0):
    """Right-padded source ``w.. </s>``, decoder input ``</s> w..``, target ``w.. </s>``."""
    generator = torch.Generator().manual_seed(seed)
    nspecial = dictionary.nspecial
    width = max(lengths)
    src = torch.full((len(lengths), width), dictionary.pad())
    prev = torch.full((len(lengths), width), dictionary.pad())
    for row, length in enumerate(lengths):
        words = torch.randint(nspecial, len(dictionary), (length - 1,), generator=generator)
        sentence = torch.cat([words, torch.tensor([dictionary.eos()])])
        src[row, :length] = sentence
        prev[row, :length] = torch.cat([torch.tensor([dictionary.eos()]), words])
    return {
        "net_input": {
            "src_tokens": src,
            "src_lengths": torch.tensor(lengths),
            "prev_output_tokens": prev,
        },
        "target": src.clone(),
        "ntokens": sum(lengths),
        "nsentences": len(lengths),
    }


ARCH_OPTIONS = [
    {},
    {"encoder_bidirectional": True, "encoder_layers": 2, "decoder_layers": 2},
    {"encoder_cell": "gru", "decoder_cell": "gru", "encoder_bidirectional": True},
    {"decoder_latent_input": True, "tie_output_embeddings": True, "share_embeddings": True},
    {"posterior_bn_gamma": 0.6, "decoder_latent_input": True},
]


@pytest.mark.parametrize("options", ARCH_OPTIONS)
def test_posterior_mean_does_not_depend_on_padding(options):
    dictionary = make_dictionary()
    model = build(dictionary, **options).eval()
    batch = make_batch(dictionary, [4, 9, 6])
    with torch.no_grad():
        together = model.encoder(**{k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"})
        for row in range(3):
            length = int(batch["net_input"]["src_lengths"][row])
            alone = model.encoder(batch["net_input"]["src_tokens"][row : row + 1, :length])
            assert torch.allclose(alone["mu"][0], together["mu"][row], atol=1e-6)
            assert torch.allclose(alone["logvar"][0], together["logvar"][row], atol=1e-6)


@pytest.mark.parametrize("options", ARCH_OPTIONS)
def test_every_parameter_gets_a_gradient_including_the_encoder(options):
    dictionary = make_dictionary()
    model = build(dictionary, **options).train()
    criterion = VRAEELBOCriterion(VRAEELBOConfig(kl_schedule="constant", max_update=0), TinyTask(dictionary))
    loss, _, _ = criterion(model, make_batch(dictionary, [5, 7, 3]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
    encoder_grad = sum(p.grad.abs().sum() for p in model.encoder.parameters())
    assert encoder_grad > 0
    # the reconstruction term alone also reaches the encoder, through z
    model.zero_grad()
    logits, extra = model(**make_batch(dictionary, [5, 7, 3])["net_input"])
    logits.sum().backward()
    assert model.encoder.latent.posterior.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("options", ARCH_OPTIONS)
def test_incremental_decoding_matches_a_full_pass(options):
    dictionary = make_dictionary()
    model = build(dictionary, **options).eval()
    batch = make_batch(dictionary, [6, 6])
    encoder_out = model.encoder(batch["net_input"]["src_tokens"])
    prev = batch["net_input"]["prev_output_tokens"]
    with torch.no_grad():
        full, _ = model.decoder(prev, encoder_out=encoder_out)
        state = {}
        steps = [model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0] for t in range(prev.size(1))]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_reordering_follows_the_beam():
    dictionary = make_dictionary()
    model = build(dictionary).eval()
    batch = make_batch(dictionary, [5, 5, 5])
    encoder_out = model.encoder(batch["net_input"]["src_tokens"])
    order = torch.tensor([2, 0, 2])
    moved = model.encoder.reorder_encoder_out(encoder_out, order)
    assert torch.equal(moved["z"], encoder_out["z"][order])


def test_posterior_mean_mode_is_deterministic_and_sampling_is_not():
    dictionary = make_dictionary()
    model = build(dictionary).eval()
    tokens = make_batch(dictionary, [5])["net_input"]["src_tokens"]
    sampled = [model.encoder(tokens)["z"] for _ in range(2)]
    assert not torch.equal(sampled[0], sampled[1])
    out = model.encoder(tokens, sample_posterior=False)
    assert torch.equal(out["z"], out["mu"])


def test_word_dropout_never_touches_special_tokens():
    dictionary = make_dictionary()
    batch = make_batch(dictionary, [12, 3, 8], seed=3)
    tokens = batch["net_input"]["prev_output_tokens"]
    torch.manual_seed(0)
    dropped = apply_word_dropout(tokens, 1.0, dictionary)
    special = tokens.eq(dictionary.eos()) | tokens.eq(dictionary.pad()) | tokens.eq(dictionary.bos())
    assert torch.equal(dropped[special], tokens[special])
    assert dropped[~special].eq(dictionary.unk()).all()
    assert torch.equal(apply_word_dropout(tokens, 0.0, dictionary), tokens)
    torch.manual_seed(0)
    half = apply_word_dropout(tokens.repeat(200, 1), 0.5, dictionary)
    words = ~special.repeat(200, 1)
    rate = half[words].eq(dictionary.unk()).float().mean().item()
    assert 0.45 < rate < 0.55


class Spy(torch.nn.Module):
    """Wraps a model (as fairseq's data-parallel wrappers do) and records the decoder
    inputs it is given."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    @property
    def decoder(self):
        return self.model.decoder

    def forward(self, **net_input):
        self.seen.append(net_input["prev_output_tokens"].clone())
        return self.model(**net_input)


def test_word_dropout_only_in_training_and_validation_reports_the_true_bound():
    dictionary = make_dictionary()
    model = build(dictionary)
    # a floor far above the KL at initialisation makes the free-bits term exactly B * D * 50
    cfg = VRAEELBOConfig(kl_schedule="linear", kl_warmup_updates=100, word_dropout=1.0, free_bits=50.0, max_update=0)
    criterion = VRAEELBOCriterion(cfg, TinyTask(dictionary))
    model.set_num_updates(10)  # what fairseq does before each step: beta = 0.1
    batch = make_batch(dictionary, [6, 4])
    spy = Spy(model)
    spy.train()
    loss, sample_size, log = criterion(spy, batch)
    assert not torch.equal(spy.seen[-1], batch["net_input"]["prev_output_tokens"])
    assert log["kl_weight"] == pytest.approx(0.1 * 2)
    # the logged KL is the true closed form (not the floor the loss used)
    with torch.no_grad():
        posterior = model.encoder(batch["net_input"]["src_tokens"], sample_posterior=False)
    mu, logvar = posterior["mu"], posterior["logvar"]
    closed_form = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum()
    assert log["kl"].item() == pytest.approx(closed_form.item(), rel=1e-5)
    assert loss.item() == pytest.approx(log["rec"].item() + 0.1 * (2 * 5 * 50.0), rel=1e-5)

    spy.eval()
    loss, sample_size, log = criterion(spy, batch)
    assert torch.equal(spy.seen[-1], batch["net_input"]["prev_output_tokens"])
    assert log["kl_weight"] == pytest.approx(2.0)  # beta = 1 per sentence
    assert loss.item() == pytest.approx(log["rec"].item() + log["kl"].item(), rel=1e-6)
    assert sample_size == batch["ntokens"]


def test_checkpoint_with_another_dictionary_is_refused_with_both_sizes():
    small, large = make_dictionary(30), make_dictionary(50)
    trained = build(small)
    other = build(large)
    with pytest.raises(ValueError, match=rf"{len(small)} entries.*{len(large)}"):
        other.load_state_dict(trained.state_dict())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reordering_the_incremental_state_follows_the_beam_with_several_layers(cell):
    dictionary = make_dictionary()
    model = build(dictionary, decoder_cell=cell, encoder_cell=cell, decoder_layers=3, decoder_latent_input=True).eval()
    batch = make_batch(dictionary, [7, 7, 7], seed=4)
    assert helpers.reordered_incremental_decoding_matches(model, batch, torch.tensor([2, 0, 0]))


def test_free_bits_stop_the_kl_gradient_of_dimensions_under_the_floor():
    from fairseq_vrae.vae_math import free_bits_kl

    kl = torch.tensor([[0.1, 2.0, 0.2], [0.3, 4.0, 0.0]], requires_grad=True)  # means 0.2, 3.0, 0.1
    free_bits_kl(kl, 0.5).backward()
    assert torch.equal(kl.grad, torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))


def test_with_every_dimension_under_the_floor_the_encoder_learns_from_reconstruction_only():
    dictionary = make_dictionary()
    batch = make_batch(dictionary, [5, 7, 3])

    def gradients(free_bits, weight=1.0):
        model = build(dictionary).train()
        cfg = VRAEELBOConfig(kl_schedule="constant", kl_weight=weight, free_bits=free_bits, max_update=0)
        torch.manual_seed(3)  # the same posterior noise in every run
        loss, _, _ = VRAEELBOCriterion(cfg, TinyTask(dictionary))(model, batch)
        loss.backward()
        return {name: p.grad.clone() for name, p in model.encoder.named_parameters()}

    floored = gradients(free_bits=100.0)  # far above every dimension's KL
    reconstruction_only = gradients(free_bits=0.0, weight=0.0)
    with_kl = gradients(free_bits=0.0)
    for name, grad in floored.items():
        assert torch.allclose(grad, reconstruction_only[name], atol=1e-7), name
    assert floored["latent.posterior.weight"].abs().sum() > 0  # reconstruction reaches it
    assert not torch.allclose(floored["latent.posterior.weight"], with_kl["latent.posterior.weight"])


def test_bn_vae_keeps_the_batch_kl_above_the_bound_its_gamma_sets():
    dictionary = make_dictionary()
    gamma, dim = 0.6, 5
    model = build(dictionary, posterior_bn_gamma=gamma).train()
    batch = make_batch(dictionary, [3, 9, 4, 6, 5, 8, 7, 4], seed=7)
    src = batch["net_input"]["src_tokens"]
    with torch.no_grad():
        raw_mu = model.encoder.latent.posterior(model.encoder.summarize(src, None)).chunk(2, dim=-1)[0]
        out = model.encoder(src, sample_posterior=False)
    mu, logvar = out["mu"].double(), out["logvar"].double()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
    # Zhu et al. (2020): E[KL] >= sum_d gamma^2 / 2
    assert float(kl) >= 0.5 * gamma**2 * dim - 1e-6
    # over the batch each dimension of mu has the fixed scale as its spread
    assert torch.allclose(mu.std(0, unbiased=False), torch.full((dim,), gamma, dtype=mu.dtype), rtol=1e-4)
    assert raw_mu.std(0).min() > 0


def test_bn_vae_gives_the_kl_no_way_to_shrink_the_raw_means():
    """With BatchNorm's epsilon under the square root, the KL's gradient shrinks the raw
    posterior means; Adam turns that small gradient into full steps and the KL falls
    far below the bound (it did on Penn Treebank within 100 updates)."""
    from fairseq_vrae.models.latent import PosteriorMeanBatchNorm

    gamma, dim = 0.6, 4
    torch.manual_seed(0)
    raw = torch.nn.Parameter(0.01 * torch.randn(16, dim))
    norm = PosteriorMeanBatchNorm(dim, gamma).train()
    optimizer = torch.optim.Adam([raw, *norm.parameters()], lr=1e-3)
    for _ in range(300):  # the KL alone, as before the decoder learns to read z
        mu = norm(raw)
        kl = 0.5 * mu.pow(2).sum(1).mean()
        optimizer.zero_grad()
        kl.backward()
        optimizer.step()
    with torch.no_grad():
        mu = norm(raw)
    assert float(0.5 * mu.pow(2).sum(1).mean()) >= 0.5 * gamma**2 * dim * 0.999
    assert float(raw.std(0).min()) > 1e-3


def test_bn_vae_uses_running_statistics_for_evaluation_and_single_sentences():
    dictionary = make_dictionary()
    model = build(dictionary, posterior_bn_gamma=0.6).train()
    for seed in range(5):  # a few training batches move the running statistics
        model.encoder(make_batch(dictionary, [4, 6, 5, 7], seed=seed)["net_input"]["src_tokens"])
    norm = model.encoder.latent.mu_norm
    assert not torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    batch = make_batch(dictionary, [4, 9, 6])
    model.eval()
    with torch.no_grad():
        together = model.encoder(batch["net_input"]["src_tokens"], sample_posterior=False)["mu"]
        alone = model.encoder(batch["net_input"]["src_tokens"][1:2, :9], sample_posterior=False)["mu"]
    assert torch.allclose(alone[0], together[1], atol=1e-6)
    model.train()  # a training batch of one sentence cannot be normalised by itself
    single = model.encoder(batch["net_input"]["src_tokens"][1:2, :9], sample_posterior=False)["mu"]
    assert torch.isfinite(single).all()


@pytest.mark.parametrize("recipe, update, beta", [("anneal-free-bits", 500, 0.5), ("bowman", 1000, 0.5), ("cyclical", 125, 0.5)])
def test_a_named_recipe_scales_its_schedule_to_the_run(recipe, update, beta):
    dictionary = make_dictionary()
    model = build(dictionary).train()
    cfg = VRAEELBOConfig(vae_recipe=recipe, max_update=3000 if recipe == "bowman" else 2000, word_dropout=0.9, free_bits=3.0)
    criterion = VRAEELBOCriterion(cfg, TinyTask(dictionary))
    model.set_num_updates(update)
    _, _, log = criterion(model, make_batch(dictionary, [5, 6]))
    assert log["kl_weight"] == pytest.approx(beta * 2, abs=1e-6)  # summed over 2 sentences
    expected = {"anneal-free-bits": (0.0, 0.25), "bowman": (0.25, 0.0), "cyclical": (0.0, 0.0)}[recipe]
    assert (criterion.cfg.word_dropout, criterion.cfg.free_bits) == expected  # the flags it replaced


def test_a_recipe_needs_the_length_of_the_run():
    with pytest.raises(ValueError, match="give --max-update"):
        VRAEELBOCriterion(VRAEELBOConfig(vae_recipe="anneal-free-bits", max_update=0), TinyTask(make_dictionary()))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zero_initialised_latent_paths_start_as_a_language_model_and_learn(cell):
    """--decoder-latent-zero-init: z changes nothing at initialisation, and the silenced
    weights (bridge, z's input columns) get gradient."""
    dictionary = make_dictionary()
    model = build(dictionary, decoder_cell=cell, decoder_latent_input=True, decoder_latent_zero_init=True).eval()
    batch = make_batch(dictionary, [5, 7, 3])
    prev = batch["net_input"]["prev_output_tokens"]
    encoder_out = model.encoder(batch["net_input"]["src_tokens"], batch["net_input"]["src_lengths"],
                                sample_posterior=False)
    logits, _ = model.decoder(prev, encoder_out=encoder_out)
    moved, _ = model.decoder(prev, encoder_out=dict(encoder_out, z=encoder_out["z"] + 1.0))
    assert torch.equal(logits, moved)
    logits.logsumexp(-1).sum().backward()
    embed_dim = model.decoder.embed_tokens.embedding_dim
    assert model.decoder.bridge.weight.grad.abs().sum() > 0
    assert model.decoder.rnn.weight_ih_l0.grad[:, embed_dim:].abs().sum() > 0
    # without the option z reaches the decoder from the start
    plain = build(dictionary, decoder_cell=cell, decoder_latent_input=True).eval()
    encoder_out = plain.encoder(batch["net_input"]["src_tokens"], batch["net_input"]["src_lengths"],
                                sample_posterior=False)
    assert not torch.equal(plain.decoder(prev, encoder_out=encoder_out)[0],
                           plain.decoder(prev, encoder_out=dict(encoder_out, z=encoder_out["z"] + 1.0))[0])


def test_bn_vae_running_statistics_start_at_the_first_batch_and_old_checkpoints_load_unchanged():
    dictionary = make_dictionary()
    model = build(dictionary, posterior_bn_gamma=0.6).train()
    norm = model.encoder.latent.mu_norm
    raw = torch.randn(8, norm.running_mean.numel()) * 0.01
    norm(raw)  # the first batch: its own statistics, not a tenth of the way from (0, 1)
    assert torch.allclose(norm.running_mean, raw.mean(0), atol=1e-6)
    assert torch.allclose(norm.running_var, raw.var(0), rtol=1e-4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["encoder.latent.mu_norm.batches_tracked"]  # written before the count existed
    restored = build(dictionary, posterior_bn_gamma=0.6)
    restored.load_state_dict(state)
    assert int(restored.encoder.latent.mu_norm.batches_tracked) == 10  # continues as an exponential average
    batch = make_batch(dictionary, [4, 6, 5])["net_input"]["src_tokens"]
    model.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(model.encoder(batch, sample_posterior=False)["mu"],
                           restored.encoder(batch, sample_posterior=False)["mu"])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_linear_bridge_hands_w_z_plus_b_to_the_decoder_and_tanh_squashes_it(cell):
    dictionary = make_dictionary()
    z = torch.randn(3, 5) * 4
    linear = build(dictionary, decoder_cell=cell, encoder_cell=cell, decoder_bridge="linear").decoder
    squashed = build(dictionary, decoder_cell=cell, encoder_cell=cell).decoder
    pre = linear.bridge(z).unsqueeze(0)
    state = linear.initial_state(z)
    hidden = state[0] if cell == "lstm" else state
    assert torch.allclose(hidden, pre) and hidden.abs().max() > 1  # not bounded by tanh
    squashed_state = squashed.initial_state(z)
    squashed_hidden = squashed_state[0] if cell == "lstm" else squashed_state
    assert torch.allclose(squashed_hidden, torch.tanh(squashed.bridge(z).unsqueeze(0)))
