"""The conditional VAE (cvae_transformer, cvae_lstm) on fairseq's translation task."""

import copy
import math
import os
import random
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from fairseq import tasks

import helpers
from fairseq_vrae.criterions.vrae_elbo import VRAEELBOCriterion
from fairseq_vrae.models.cvae_transformer import CVAETransformerModel
from fairseq_vrae.models.latent import ConditionalGaussianPrior

BIN = os.path.dirname(sys.executable)
W = helpers.WORDS


def two_variant_pairs(count: int, seed: int):
    """Each source is translated either word for word or through a fixed substitution,
    by a coin the source does not show: only z can tell the decoder which."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = [rng.choice(W[:12]) for _ in range(rng.randint(3, 6))]
        target = words if rng.random() < 0.5 else [W[W.index(w) + 12] for w in words]
        pairs.append((" ".join(words), " ".join(target)))
    return pairs


TINY_TRANSFORMER = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
                    "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--share-all-embeddings"]


def cvae_train_args(data, save_dir, arch="cvae_transformer", extra=()):
    sizes = TINY_TRANSFORMER if arch == "cvae_transformer" else [
        "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-hidden-size", "32",
        "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32", "--share-all-embeddings"]
    return [data, "--user-dir", helpers.USER_DIR, "--task", "translation", "-s", "en", "-t", "de",
            "--arch", arch, *sizes, "--latent-dim", "4", "--dropout", "0", "--optimizer", "adam",
            "--lr", "0.005", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20",
            "--criterion", "vrae_elbo", "--kl-schedule", "linear", "--kl-warmup-updates", "200",
            "--free-bits", "0.5", "--bow-loss-weight", "1", "--max-tokens", "1200", "--cpu",
            "--num-workers", "0", "--save-dir", save_dir, "--no-epoch-checkpoints", "--seed", "3",
            "--log-format", "json", "--log-interval", "50", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny cvae_transformer trained for 500 updates on the two-variant pairs."""
    root = tmp_path_factory.mktemp("cvae")
    test = two_variant_pairs(40, seed=1)
    data = helpers.binarize_pair(str(root / "corpus"), {"train": two_variant_pairs(600, seed=0), "valid": test, "test": test})
    save_dir = str(root / "checkpoints")
    helpers.run_train(cvae_train_args(data, save_dir, extra=["--max-update", "500", "--distributed-world-size", "1"]))
    return data, os.path.join(save_dir, "checkpoint_last.pt"), test


def run(command, *args, timeout=300, stdin=None):
    done = subprocess.run([os.path.join(BIN, command), *args], capture_output=True, text=True,
                          timeout=timeout, input=stdin)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def generate(data, checkpoint, *flags):
    out = run("fairseq-generate", data, "--user-dir", helpers.USER_DIR, "-s", "en", "-t", "de", "--path",
              checkpoint, "--gen-subset", "test", "--beam", "4", "--batch-size", "16", "--cpu", *flags)
    hypotheses = {}
    for line in out.splitlines():
        if line.startswith("H-"):
            key, _, text = line.split("\t")
            hypotheses.setdefault(int(key[2:]), []).append(text)
    return hypotheses


def exact(hypotheses, test):
    return sum(hypotheses[i][0] == target for i, (_, target) in enumerate(test)) / len(test)


def test_posterior_mean_translations_follow_the_reference_that_the_prior_cannot_know(trained):
    data, checkpoint, test = trained
    prior = generate(data, checkpoint, "--task", "latent_translation")
    posterior = generate(data, checkpoint, "--task", "latent_translation", "--latent-mode", "posterior-mean")
    assert exact(posterior, test) >= exact(prior, test) + 0.2, (exact(posterior, test), exact(prior, test))


def test_prior_mean_translation_is_deterministic_and_is_what_the_stock_task_does(trained):
    data, checkpoint, _ = trained
    stock = generate(data, checkpoint, "--task", "translation")
    again = generate(data, checkpoint, "--task", "translation", "--seed", "7")
    latent = generate(data, checkpoint, "--task", "latent_translation", "--latent-mode", "prior-mean")
    assert stock == again == latent
    assert all(len(h) == 1 for h in stock.values())


def test_prior_samples_differ_across_draws_and_repeat_with_the_seed(trained):
    data, checkpoint, test = trained
    flags = ["--task", "latent_translation", "--latent-mode", "prior-sample", "--samples-per-source", "5"]
    first = generate(data, checkpoint, *flags)
    assert sorted(first) == list(range(len(test))) and all(len(h) == 5 for h in first.values())
    assert generate(data, checkpoint, *flags) == first
    varied = sum(len(set(h)) > 1 for h in first.values()) / len(first)
    assert varied >= 0.5, first
    # both variants of the data appear among the draws of one source
    covered = sum(any(h == t for h in first[i]) and any(h != t for h in first[i]) for i, (_, t) in enumerate(test))
    assert covered >= 0.3 * len(test)
    assert generate(data, checkpoint, *flags, "--seed", "11") != first
    # --nbest keeps that many hypotheses of each draw
    two_best = generate(data, checkpoint, *flags, "--nbest", "2")
    assert all(len(h) == 10 for h in two_best.values())
    assert all(h[0::2] == first[i] for i, h in two_best.items())


def test_interactive_and_hub_give_k_samples_per_source(trained):
    data, checkpoint, test = trained
    sources = [source for source, _ in test[:3]]
    out = run("fairseq-interactive", data, "--user-dir", helpers.USER_DIR, "--task", "latent_translation",
              "--latent-mode", "prior-sample", "--samples-per-source", "3", "-s", "en", "-t", "de",
              "--path", checkpoint, "--beam", "2", "--cpu", "--seed", "3", stdin="\n".join(sources) + "\n")
    printed = [line.split("\t")[2] for line in out.splitlines() if line.startswith("H-")]
    assert len(printed) == 9

    import fairseq_vrae  # noqa: F401  (registers the models)

    hub = CVAETransformerModel.from_pretrained(os.path.dirname(checkpoint), "checkpoint_last.pt", data,
                                               latent_mode="prior-sample", samples_per_source=3)
    hub.eval()
    tokens = [hub.encode(s) for s in sources]
    # one sentence per batch, as fairseq-interactive reads them, and the checkpoint's
    # --seed (3), which the hub keeps: the same seeded draws
    generated = [hypos for t in tokens for hypos in hub.generate([t], beam=2)]
    assert [hub.decode(h["tokens"]) for hypos in generated for h in hypos] == printed
    assert len({tuple(h) for h in (printed[0:3], printed[3:6], printed[6:9])}) == 3
    mean = CVAETransformerModel.from_pretrained(os.path.dirname(checkpoint), "checkpoint_last.pt", data)
    assert mean.translate(sources, beam=4) == [generate(data, checkpoint, "--task", "translation")[i][0] for i in range(3)]
    # the prior temperature, on the command line and in the hub: at 0 every draw is the mean
    cold = run("fairseq-interactive", data, "--user-dir", helpers.USER_DIR, "--task", "latent_translation",
               "--latent-mode", "prior-sample", "--samples-per-source", "3", "-s", "en", "-t", "de",
               "--path", checkpoint, "--beam", "2", "--cpu", "--prior-temperature", "0", stdin=sources[0] + "\n")
    frozen = CVAETransformerModel.from_pretrained(os.path.dirname(checkpoint), "checkpoint_last.pt", data,
                                                  latent_mode="prior-sample", samples_per_source=3, prior_temperature=0)
    frozen.eval()
    drawn = [frozen.decode(h["tokens"]) for h in frozen.generate([tokens[0]], beam=2)[0]]
    assert drawn == [line.split("\t")[2] for line in cold.splitlines() if line.startswith("H-")]
    assert drawn == mean.translate([sources[0]], beam=2) * 3
    # --distinct-draws in the hub: at temperature 0, the prior-mean beam's K-best list
    apart = CVAETransformerModel.from_pretrained(os.path.dirname(checkpoint), "checkpoint_last.pt", data,
                                                 latent_mode="prior-sample", samples_per_source=3,
                                                 prior_temperature=0, distinct_draws=True)
    apart.eval()
    k_best = [mean.decode(h["tokens"]) for h in mean.generate([tokens[0]], beam=3)[0]]
    assert [apart.decode(h["tokens"]) for h in apart.generate([tokens[0]], beam=3)[0]] == k_best


def interactive_translations(out):
    """fairseq-interactive's output -> {id: source line}, {id: [hypotheses]}."""
    sources, hypotheses = {}, {}
    for line in out.splitlines():
        if line.startswith("S-"):
            key, text = line.split("\t")
            sources[int(key[2:])] = text
        elif line.startswith("H-"):
            key, _, text = line.split("\t")
            hypotheses.setdefault(int(key[2:]), []).append(text)
    return sources, hypotheses


def test_interactive_skips_a_source_longer_than_the_model_takes_and_translates_the_rest(trained):
    data, checkpoint, test = trained
    sources = [source for source, _ in test[:4]]
    # the 2,000-word line (2,001 tokens with </s>, over the 1,024 source positions) is
    # #3 of the first buffer of 4: the three lines before it and the one after it are
    # still translated, under their own ids, with the draws they get without it
    lines = sources[:3] + [" ".join(["cat"] * 2000)] + sources[3:]
    flags = ["--user-dir", helpers.USER_DIR, "--task", "latent_translation", "--latent-mode", "prior-sample",
             "--samples-per-source", "3", "-s", "en", "-t", "de", "--path", checkpoint, "--beam", "2",
             "--cpu", "--seed", "3", "--buffer-size", "4"]
    out = run("fairseq-interactive", data, *flags, stdin="\n".join(lines) + "\n")
    printed, hypotheses = interactive_translations(out)
    assert printed == {i: lines[i] for i in (0, 1, 2, 4)}
    assert sorted(hypotheses) == [0, 1, 2, 4] and all(len(h) == 3 for h in hypotheses.values())
    assert "skipping an input line (1 skipped so far): 2001 tokens with </s> (input S-3)" in out
    assert "more than the 1024 source positions" in out
    _, alone = interactive_translations(run("fairseq-interactive", data, *flags, stdin="\n".join(sources[:3]) + "\n"))
    assert {i: hypotheses[i] for i in range(3)} == alone
    # fairseq's own flag still skips the line, and changes nothing else
    flagged = run("fairseq-interactive", data, *flags, "--skip-invalid-size-inputs-valid-test",
                  stdin="\n".join(lines) + "\n")
    assert interactive_translations(flagged) == (printed, hypotheses)
    assert "skipping an input line (1 skipped so far)" in flagged


def test_posterior_mean_without_a_reference_is_a_clear_error(trained):
    data, checkpoint, _ = trained
    done = subprocess.run(
        [os.path.join(BIN, "fairseq-interactive"), data, "--user-dir", helpers.USER_DIR, "--task", "latent_translation",
         "--latent-mode", "posterior-mean", "-s", "en", "-t", "de", "--path", checkpoint, "--cpu"],
        capture_output=True, text=True, input="log a sat a\n", timeout=300)
    assert done.returncode != 0 and "reads the reference translation" in done.stderr


def test_validate_reports_an_importance_weighted_nll_below_the_bound(trained):
    data, checkpoint, _ = trained
    out = run("fairseq-validate", data, "--user-dir", helpers.USER_DIR, "--task", "latent_translation", "-s", "en",
              "-t", "de", "--path", checkpoint, "--valid-subset", "test", "--iw-samples", "50", "--cpu",
              "--batch-size", "16")
    values = {k: float(v) for k, v in re.findall(r"\| (iw_nll|elbo|kl|mi|au|nll_loss) ([\d.]+)", out)}
    assert {"iw_nll", "elbo", "kl", "mi", "au", "nll_loss"} <= set(values), out[-2000:]
    assert values["iw_nll"] <= values["elbo"] + 1e-3
    assert values["kl"] > 0.5 and values["au"] >= 1


def test_a_plain_transformer_checkpoint_is_refused_by_latent_translation(trained, tmp_path):
    data, _, _ = trained
    save_dir = str(tmp_path / "plain")
    helpers.run_train([data, "--task", "translation", "-s", "en", "-t", "de", "--arch", "transformer",
                       *TINY_TRANSFORMER, "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "1200",
                       "--max-update", "1", "--cpu", "--num-workers", "0", "--distributed-world-size", "1",
                       "--save-dir", save_dir, "--disable-validation"])
    done = subprocess.run(
        [os.path.join(BIN, "fairseq-generate"), data, "--user-dir", helpers.USER_DIR, "--task", "latent_translation",
         "-s", "en", "-t", "de", "--path", os.path.join(save_dir, "checkpoint_last.pt"), "--cpu"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "needs a conditional VAE" in done.stderr and "--task translation" in done.stderr


# ---- without training ---------------------------------------------------------------


def build(arch, tmp_path, extra=()):
    pairs = two_variant_pairs(30, seed=0)
    data = helpers.binarize_pair(str(tmp_path / "corpus"), {"train": pairs, "valid": pairs[:8]})
    import fairseq_vrae  # noqa: F401  (registers the models)
    from fairseq import options

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, cvae_train_args(data, str(tmp_path / "ck"), arch, extra))
    task = tasks.setup_task(args)
    task.load_dataset("train")
    model = task.build_model(args)
    criterion = task.build_criterion(args)
    batch = task.dataset("train").collater([task.dataset("train")[i] for i in range(8)])
    return task, model, criterion, batch


@pytest.mark.parametrize("arch", ["cvae_transformer", "cvae_lstm"])
def test_every_parameter_gets_a_gradient_the_prior_network_included(arch, tmp_path):
    _, model, criterion, batch = build(arch, tmp_path)
    model.train()
    model.set_num_updates(100)
    loss, _, log = criterion(model, batch)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing
    prior = [m for m in model.modules() if isinstance(m, ConditionalGaussianPrior)]
    assert len(prior) == 1 and all(p.grad.abs().sum() > 0 for p in prior[0].parameters())
    assert float(log["bow"]) > 0


@pytest.mark.parametrize("arch", ["cvae_transformer", "cvae_lstm"])
def test_the_output_shift_adds_zs_projection_to_every_state_the_output_layer_reads(arch, tmp_path):
    """--latent-injection output: the logits are the output layer applied to the decoder's
    features (computed without z) plus W z + b at every position, as a reference
    computes them from the base decoder's own extract_features and output_layer."""
    _, model, _, batch = build(arch, tmp_path, ["--latent-injection", "output"])
    model.eval()
    decoder = model.decoder
    assert decoder.latent_to_embedding is None and decoder.latent_to_memory is None
    assert decoder.latent_to_output.weight.abs().sum() == 0  # silent at initialisation
    torch.manual_seed(0)
    torch.nn.init.normal_(decoder.latent_to_output.weight, std=0.5)
    torch.nn.init.normal_(decoder.latent_to_output.bias, std=0.5)
    net_input = batch["net_input"]
    base = type(decoder).__mro__[2]  # fairseq's TransformerDecoderBase / LSTMDecoder
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
        logits, _ = decoder(net_input["prev_output_tokens"], encoder_out=encoder_out)
        source = encoder_out["source"]
        features, _ = base.extract_features(decoder, net_input["prev_output_tokens"], encoder_out=source)
        shift = encoder_out["z"] @ decoder.latent_to_output.weight.t() + decoder.latent_to_output.bias
        expected = base.output_layer(decoder, features + shift[:, None, :])
        unshifted = base.output_layer(decoder, features)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert not torch.allclose(logits, unshifted, atol=1e-3)
    # outside the decoder's forward (the bag-of-words head's call) the output layer is unshifted
    assert torch.equal(decoder.output_layer(features), unshifted)


def test_the_best_prior_draw_term_is_the_lowest_likelihood_over_the_draws_and_trains_the_prior(tmp_path):
    """--prior-draws 3: the logged best_draw is, per pair, the smallest NLL of the target
    over three draws of p(z|x), recomputed here from the same noise with the decoder in
    evaluation mode; its term alone sends gradient into the prior network."""
    import torch.nn.functional as F

    _, model, criterion, batch = build("cvae_transformer", tmp_path, ["--prior-draws", "3"])
    assert criterion.cfg.prior_draws == 3
    model.train()
    net_input, target = batch["net_input"], batch["target"]
    torch.manual_seed(5)
    _, _, log = criterion(model, batch)
    torch.manual_seed(5)
    model(**net_input)  # the posterior's draw comes first in the random stream
    with torch.no_grad():
        source = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        noise = torch.randn((3,) + tuple(source["prior_mu"].shape))
        model.eval()
        per_draw = []
        for eps in noise:
            z = source["prior_mu"] + torch.exp(0.5 * source["prior_logvar"]) * eps
            logits = model.decoder(net_input["prev_output_tokens"], encoder_out=dict(source, z=z))[0]
            lprobs = F.log_softmax(logits.float(), dim=-1).gather(2, target.unsqueeze(-1)).squeeze(-1)
            per_draw.append(-(lprobs * target.ne(criterion.padding_idx)).sum(1))
        per_draw = torch.stack(per_draw, 1)
    best = per_draw.min(1).values.sum()
    assert float(log["best_draw"]) == pytest.approx(float(best), rel=1e-4)
    assert float(best) < float(per_draw.mean(1).sum()) - 1e-3  # the draws differ, and the best is taken
    model.train()
    model.zero_grad()
    loss, _, _ = criterion.best_prior_draw_loss(model, net_input, target)
    loss.backward()
    prior = [m for m in model.modules() if isinstance(m, ConditionalGaussianPrior)][0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters())


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_the_prior_slots_are_the_same_points_of_every_prior_and_the_ones_training_ranks(tmp_path, scale):
    """--prior-draws 3 --prior-draw-slots: draw k of every pair is mu(x) + S * sigma(x) * e_k with
    e_k the N(0, I) draw of the generator seeded 2**62 + k (whatever --seed) and S the model's
    --prior-slot-scale; the generation path (the encoder's latent_seeds at the temperature
    --latent-mode prior-slots gives them at --prior-temperature 1) makes the same codes, and
    best_draw is the smallest NLL over them, with the wins per slot logged."""
    import torch.nn.functional as F

    from fairseq_vrae.criterions.vrae_elbo import VRAEELBOCriterion, slots_used
    from fairseq_vrae.generation.translation.prior_slots import PriorSlots, slot_scale
    from fairseq_vrae.models.cvae import CVAEEncoder

    _, model, criterion, batch = build("cvae_transformer", tmp_path, ["--prior-draws", "3", "--prior-draw-slots",
                                                                      "--prior-slot-scale", str(scale)])
    net_input, target = batch["net_input"], batch["target"]
    rows = target.size(0)
    expected_noise = scale * torch.stack([torch.randn(4, generator=torch.Generator().manual_seed(2**62 + k))
                                          for k in range(3)])
    seeds = PriorSlots.draw_seeds(None, torch.arange(rows), 3)
    assert slot_scale([model]) == scale
    with pytest.raises(ValueError, match="different --prior-slot-scale"):
        slot_scale([model, SimpleNamespace(encoder=SimpleNamespace(prior_slot_scale=scale + 1))])
    with pytest.raises(ValueError, match="--prior-slot-scale must be > 0"):
        CVAEEncoder(model.encoder.dictionary, 4, 4, 4, prior_slot_scale=0.0)
    with torch.no_grad():
        model.eval()
        codes = model.encoder(net_input["src_tokens"].repeat_interleave(3, 0),
                              src_lengths=net_input["src_lengths"].repeat_interleave(3, 0), latent_seeds=seeds,
                              latent_temperature=slot_scale([model]))
        noise = (codes["z"] - codes["prior_mu"]) / torch.exp(0.5 * codes["prior_logvar"])
    assert torch.allclose(noise.view(rows, 3, 4), expected_noise.expand(rows, 3, 4), atol=1e-4)
    assert len({tuple(r) for r in codes["prior_mu"].view(rows, 3, 4)[:, 0].tolist()}) > 1  # the sources differ
    with torch.no_grad():
        lprobs = F.log_softmax(model.decoder(net_input["prev_output_tokens"].repeat_interleave(3, 0),
                                             encoder_out=codes)[0].float(), dim=-1)
        repeated = target.repeat_interleave(3, 0)
        per_slot = -(lprobs.gather(2, repeated.unsqueeze(-1)).squeeze(-1) * repeated.ne(criterion.padding_idx)).sum(1)
    per_slot = per_slot.view(rows, 3)
    assert float(per_slot.min(1).values.sum()) < float(per_slot.mean(1).sum()) - 1e-3  # the slots differ
    model.train()
    _, _, log = criterion(model, batch)
    assert float(log["best_draw"]) == pytest.approx(float(per_slot.min(1).values.sum()), rel=1e-4)
    wins = [log[f"slot{k}_wins"] for k in range(3)]
    assert wins == torch.bincount(per_slot.argmin(1), minlength=3).tolist()
    assert slots_used([4, 4, 4]) == pytest.approx(3.0) and slots_used([12, 0, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs K >= 2"):
        cfg = copy.deepcopy(criterion.cfg)
        cfg.prior_draws = 0
        VRAEELBOCriterion(cfg, criterion.task)


@pytest.mark.parametrize("injection", ["output", "embedding+output"])
def test_ranked_by_the_bag_of_words_head_the_best_slot_is_the_one_whose_words_fit_the_target(tmp_path, injection):
    """--prior-draw-ranking bow: the slot each pair trains on is the one under which the
    bag-of-words head gives the target's words (not </s>) the highest likelihood, computed
    here from the head's softmax at the slot codes; best_draw is the decoder's NLL at that
    slot, and the ranking differs from the decoder's own for some pairs."""
    import torch.nn.functional as F

    from fairseq_vrae.vae_math import slot_noise

    _, model, criterion, batch = build("cvae_transformer", tmp_path, [
        "--prior-draws", "3", "--prior-draw-slots", "--prior-draw-ranking", "bow", "--latent-injection", injection])
    torch.manual_seed(0)
    torch.nn.init.normal_(model.decoder.latent_to_output.weight)
    net_input, target = batch["net_input"], batch["target"]
    words = target.ne(criterion.padding_idx) & target.ne(model.decoder.dictionary.eos())
    model.eval()
    with torch.no_grad():
        source = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        codes = source["prior_mu"] + torch.exp(0.5 * source["prior_logvar"]) * slot_noise(3, 4)[:, None, :]
        by_words, by_decoder = [], []
        for z in codes:
            head = F.log_softmax(model.decoder.output_layer(model.decoder.latent_features(z)).float(), dim=-1)
            by_words.append(-(head.gather(1, target) * words).sum(1))
            lprobs = F.log_softmax(model.decoder(net_input["prev_output_tokens"], encoder_out=dict(source, z=z))[0]
                                   .float(), dim=-1).gather(2, target.unsqueeze(-1)).squeeze(-1)
            by_decoder.append(-(lprobs * target.ne(criterion.padding_idx)).sum(1))
    by_words, by_decoder = torch.stack(by_words, 1), torch.stack(by_decoder, 1)
    best = by_words.argmin(1)
    assert not torch.equal(best, by_decoder.argmin(1))
    model.train()
    _, _, log = criterion(model, batch)
    assert [log[f"slot{k}_wins"] for k in range(3)] == torch.bincount(best, minlength=3).tolist()
    expected = by_decoder.gather(1, best[:, None]).sum()
    assert float(log["best_draw"]) == pytest.approx(float(expected), rel=1e-4)


@pytest.mark.parametrize("arch, injection", [("cvae_transformer", "output"), ("cvae_lstm", "output"),
                                             ("cvae_transformer", "embedding+output")])
def test_the_scores_under_several_codes_are_those_of_one_decoder_call_per_code(tmp_path, arch, injection):
    """logits_for_codes (the ranking of --prior-draws), which runs the network once when z
    only shifts the output layer's input, gives what a decoder call with each code gives."""
    _, model, _, batch = build(arch, tmp_path, ["--latent-injection", injection])
    torch.manual_seed(0)
    for projection in (model.decoder.latent_to_output, getattr(model.decoder, "latent_to_embedding", None)):
        if projection is not None:
            torch.nn.init.normal_(projection.weight)
    model.eval()
    net_input = batch["net_input"]
    with torch.no_grad():
        source = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        codes = torch.randn(3, *source["z"].shape)
        together = model.decoder.logits_for_codes(net_input["prev_output_tokens"], source, codes)
        one_by_one = [model.decoder(net_input["prev_output_tokens"], encoder_out=dict(source, z=z))[0] for z in codes]
    assert len(together) == 3
    for a, b in zip(together, one_by_one):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(one_by_one[0], one_by_one[1], atol=1e-3)  # the codes change the scores
    assert model.decoder.output_shift is None


@pytest.mark.parametrize("arch", ["cvae_transformer", "cvae_lstm"])
def test_with_z_at_the_output_the_best_draw_term_from_the_training_pass_is_the_term_decoded_anew(tmp_path, arch):
    """--latent-injection output: the best slot's term computed from the training forward's
    logits (rescored to the slot's code) equals the one decoded again from a fresh encoding
    (no dropout here), the same slots win, and its gradient reaches the prior network and
    the decoder's layers."""
    _, model, criterion, batch = build(arch, tmp_path, ["--latent-injection", "output", "--prior-draws", "3",
                                                        "--prior-draw-slots"])
    torch.manual_seed(0)
    torch.nn.init.normal_(model.decoder.latent_to_output.weight)
    assert model.decoder.z_only_shifts_output
    model.train()
    net_input, target = batch["net_input"], batch["target"]
    logits, extra = model(**net_input)
    smoothed, rec, best = criterion.best_prior_draw_loss(model, net_input, target, trained=(logits, extra))
    again_smoothed, again_rec, again_best = criterion.best_prior_draw_loss(model, net_input, target)
    assert torch.equal(best, again_best)
    assert float(rec) == pytest.approx(float(again_rec), rel=1e-5)
    assert float(smoothed) == pytest.approx(float(again_smoothed), rel=1e-5)
    model.zero_grad()
    smoothed.backward()
    prior = [m for m in model.modules() if isinstance(m, ConditionalGaussianPrior)][0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters())
    assert model.decoder.latent_to_output.weight.grad.abs().sum() > 0
    body = [p for n, p in model.decoder.named_parameters() if "layers" in n and p.requires_grad]
    assert body and all(p.grad is not None for p in body)


@pytest.mark.parametrize("injection", ["output", "both"])
def test_the_prior_mean_term_is_the_likelihood_of_the_target_at_the_prior_mean_and_trains_it(injection, tmp_path):
    """--prior-mean-weight 2: the loss grows by twice the label-smoothed term of the target
    decoded with z = mu(x) (the code --latent-mode prior-mean translates with); the logged
    prior_mean_rec is that decode's NLL, recomputed here with the decoder run anew (so the
    output-layer shortcut of --latent-injection output is checked against a real decode),
    and the term alone sends gradient into the prior's mean."""
    import torch.nn.functional as F

    task, model, criterion, batch = build("cvae_transformer", tmp_path,
                                          ["--latent-injection", injection, "--prior-mean-weight", "2"])
    torch.manual_seed(0)
    for name, weight in model.decoder.named_parameters():
        if name.startswith("latent_to_") and name.endswith("weight"):
            torch.nn.init.normal_(weight)
    assert model.decoder.z_only_shifts_output == (injection == "output")
    cfg = copy.deepcopy(criterion.cfg)
    cfg.prior_mean_weight = 0.0
    without = VRAEELBOCriterion(cfg, task)
    model.train()
    net_input, target = batch["net_input"], batch["target"]
    torch.manual_seed(3)
    loss, _, log = criterion(model, batch)
    torch.manual_seed(3)
    plain, _, plain_log = without(model, batch)
    assert "prior_mean_rec" not in plain_log
    with torch.no_grad():
        source = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        logits = model.decoder(net_input["prev_output_tokens"], encoder_out=dict(source, z=source["prior_mu"]))[0]
        lprobs = F.log_softmax(logits.float(), dim=-1)
        keep = target.ne(criterion.padding_idx)
        nll = -(lprobs.gather(2, target.unsqueeze(-1)).squeeze(-1) * keep).sum()
        smooth = -(lprobs.sum(-1) * keep).sum()
        eps = criterion.cfg.label_smoothing
        smoothed = (1 - eps - eps / (lprobs.size(-1) - 1)) * nll + eps / (lprobs.size(-1) - 1) * smooth
    assert float(log["prior_mean_rec"]) == pytest.approx(float(nll), rel=1e-4)
    assert float((loss - plain).detach()) == pytest.approx(2 * float(smoothed), rel=1e-4)
    model.zero_grad()
    term, _ = criterion.prior_mean_loss(model, net_input, target)
    term.backward()
    prior = [m for m in model.modules() if isinstance(m, ConditionalGaussianPrior)][0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters())
    with pytest.raises(ValueError, match="--prior-mean-weight must be >= 0"):
        VRAEELBOCriterion(copy.deepcopy(cfg).__class__(**{**vars(cfg), "prior_mean_weight": -1.0}), task)


def test_without_the_bag_of_words_loss_its_head_is_still_in_every_step(tmp_path):
    """DDP without --find-unused-parameters needs every parameter in the graph."""
    task, model, plain, batch = build("cvae_transformer", tmp_path)
    cfg = copy.deepcopy(plain.cfg)
    cfg.bow_loss_weight, cfg.free_bits = 0.0, 0.0
    criterion = VRAEELBOCriterion(cfg, task)
    model.train()
    loss, _, log = criterion(model, batch)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.decoder.bag_of_words.weight.grad.abs().sum() == 0  # weighted 0: no effect on training
    assert float(log["bow"]) > 0  # still logged


@pytest.mark.parametrize("arch", ["cvae_transformer", "cvae_lstm"])
@pytest.mark.parametrize("mode, injection", [("prior-mean", "both"), ("prior-sample", "both"),
                                             ("prior-sample", "embedding+output")])
def test_incremental_decoding_with_beam_reordering_matches_a_full_pass(arch, mode, injection, tmp_path):
    """As in beam search: each source's encoder output (z and its memory position
    included) is copied to its beams, and reordering moves hypotheses within a source."""
    _, model, _, batch = build(arch, tmp_path, ["--latent-injection", injection])
    for projection in (model.decoder.latent_to_embedding, model.decoder.latent_to_output):
        if projection is not None:  # as training leaves them: z changes what the decoder computes
            torch.nn.init.normal_(projection.weight, std=0.5)
    model.eval()
    beams, sources = 2, 4
    net_input = batch["net_input"]
    rows = torch.arange(sources).repeat_interleave(beams)
    extra = {"latent_seeds": torch.arange(sources)} if mode == "prior-sample" else {}
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"][:sources], net_input["src_lengths"][:sources], **extra)
        encoder_out = model.encoder.reorder_encoder_out(encoder_out, rows)
        prev = net_input["prev_output_tokens"][rows].clone()
        prev[1::2, 1:4] = prev[1::2, 1:4].flip(1)  # the second beam of each source follows another prefix
        order = torch.tensor([1, 1, 2, 3, 5, 4, 7, 7])
        state, before, after = {}, 2, 2  # targets have >= 3 words: no padding in 4 steps
        for t in range(before):
            model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)
        model.decoder.reorder_incremental_state_scripting(state, order)
        moved_out = model.encoder.reorder_encoder_out(encoder_out, order)
        moved_prev = prev[order]
        steps = [model.decoder(moved_prev[:, : t + 1], encoder_out=moved_out, incremental_state=state)[0]
                 for t in range(before, before + after)]
        full, _ = model.decoder(moved_prev[:, : before + after], encoder_out=moved_out)
    assert torch.allclose(torch.cat(steps, dim=1), full[:, before:], atol=1e-5)
    if mode == "prior-sample":  # the draws differ between sources and change the output
        assert not torch.allclose(encoder_out["z"][0], encoder_out["z"][2])


def test_word_dropout_reaches_the_decoder_but_not_the_recognition_network(tmp_path):
    task, model, plain, batch = build("cvae_transformer", tmp_path)
    cfg = copy.deepcopy(plain.cfg)
    cfg.word_dropout = 1.0
    dropping = VRAEELBOCriterion(cfg, task)
    seen = {}
    encoder_forward, decoder_forward = model.encoder.forward, model.decoder.forward

    def encoder_spy(*args, **kwargs):
        seen["posterior_tokens"] = kwargs["posterior_tokens"]
        return encoder_forward(*args, **kwargs)

    def decoder_spy(prev_output_tokens, *args, **kwargs):
        seen["decoder_input"] = prev_output_tokens
        return decoder_forward(prev_output_tokens, *args, **kwargs)

    model.encoder.forward, model.decoder.forward = encoder_spy, decoder_spy
    model.train()
    dropping(model, batch)
    clean = batch["net_input"]["prev_output_tokens"]
    assert torch.equal(seen["posterior_tokens"], clean)
    words = clean.ne(model.decoder.dictionary.eos()) & clean.ne(model.decoder.dictionary.pad())
    assert seen["decoder_input"][words].eq(model.decoder.dictionary.unk()).all()


def test_label_smoothing_changes_training_only_and_nll_loss_is_unsmoothed(tmp_path):
    task, model, plain, batch = build("cvae_transformer", tmp_path)
    smoothed_cfg = copy.deepcopy(plain.cfg)
    smoothed_cfg.label_smoothing = 0.1
    smoothed = VRAEELBOCriterion(smoothed_cfg, task)
    model.set_num_updates(10_000)
    results = {}
    for name, criterion in (("plain", plain), ("smoothed", smoothed)):
        for mode in ("train", "eval"):
            getattr(model, mode)()
            torch.manual_seed(0)
            loss, _, log = criterion(model, batch)
            results[name, mode] = (float(loss), float(log["nll_loss"]), float(log["rec"]))
    assert abs(results["smoothed", "train"][0] - results["plain", "train"][0]) > 1e-3  # smoothing is trained
    assert results["smoothed", "train"][1:] == pytest.approx(results["plain", "train"][1:], rel=1e-6)  # unsmoothed
    assert results["smoothed", "eval"] == pytest.approx(results["plain", "eval"], rel=1e-6)  # the true bound


def test_bag_of_words_loss_is_the_negative_log_likelihood_of_the_target_words(tmp_path):
    _, model, criterion, batch = build("cvae_transformer", tmp_path)
    model.eval()
    with torch.no_grad():
        _, extra = model(**batch["net_input"])
        log_probs = torch.log_softmax(model.bag_of_words_logits(extra).float(), dim=-1)
        expected = 0.0
        eos, pad = model.decoder.dictionary.eos(), model.decoder.dictionary.pad()
        for row, target in enumerate(batch["target"].tolist()):
            expected -= sum(float(log_probs[row, word]) for word in target if word not in (eos, pad))
        assert math.isclose(float(criterion.bag_of_words_nll(model, extra, batch["target"])), expected, rel_tol=1e-5)


@pytest.mark.parametrize("arch, head", [("cvae_transformer", "shared"), ("cvae_transformer", "own"),
                                        ("cvae_lstm", "own")])
def test_the_bag_of_words_head_reaches_unread_word_embeddings_only_through_a_shared_output_layer(
        arch, head, tmp_path):
    """--bow-head own scores z with an output layer of its own, so the BoW loss no longer
    shapes the (shared) embeddings of words neither network reads in the batch.  (The
    shared case needs an output layer tied to the embeddings: cvae_transformer with
    --share-all-embeddings; fairseq's lstm keeps its output layer apart.)"""
    _, model, criterion, batch = build(arch, tmp_path, ["--bow-head", head])
    model.train()
    _, extra = model(**batch["net_input"], posterior_tokens=batch["target"])
    criterion.bag_of_words_nll(model, extra, batch["target"]).backward()
    embedding = model.decoder.embed_tokens.weight
    read = set(batch["net_input"]["src_tokens"].flatten().tolist()) | set(batch["target"].flatten().tolist())
    unread = [i for i in range(embedding.size(0)) if i not in read]
    assert unread
    unread_gradient = embedding.grad[unread].abs().sum()
    if head == "own":
        assert model.decoder.bag_of_words.out_features == len(model.decoder.dictionary)
        assert unread_gradient == 0
    else:
        assert unread_gradient > 0


def test_vrae_elbo_on_a_model_without_a_latent_or_without_a_bag_of_words_head_is_a_clear_error(tmp_path):
    pairs = two_variant_pairs(10, seed=0)
    data = helpers.binarize_pair(str(tmp_path / "corpus"), {"train": pairs, "valid": pairs})
    with pytest.raises(ValueError, match="has no latent layer"):
        helpers.run_train([data, "--user-dir", helpers.USER_DIR, "--task", "translation", "-s", "en", "-t", "de",
                           "--arch", "transformer", *TINY_TRANSFORMER, "--criterion", "vrae_elbo",
                           "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "500",
                           "--max-update", "1", "--cpu", "--num-workers", "0", "--distributed-world-size", "1",
                           "--save-dir", str(tmp_path / "ck"), "--disable-validation"])
    mono = helpers.binarize(str(tmp_path / "mono"), {"train": helpers.random_sentences(20), "valid": helpers.random_sentences(4)})
    with pytest.raises(ValueError, match="bag-of-words head"):
        helpers.run_train(helpers.vrae_train_args(mono, str(tmp_path / "ck2"), ["--bow-loss-weight", "1", "--max-update", "1"]))


def test_two_gloo_workers_train_under_the_stock_translation_task(tmp_path):
    pairs = two_variant_pairs(120, seed=0)
    data = helpers.binarize_pair(str(tmp_path / "corpus"), {"train": pairs, "valid": pairs[:20]})
    fairseq_train = shutil.which("fairseq-train", path=BIN)
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), fairseq_train,
            *cvae_train_args(data, str(tmp_path / "ck"), extra=["--max-update", "4", "--iw-samples", "5"]),
            "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "distributed init (rank 1)" in output
    assert re.search(r'num_updates": "4"', output) and re.search(r'"valid_iw_nll": "[0-9.]+"', output), output[-3000:]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_eval_bleu_validation_of_the_translation_task_works(tmp_path):
    pairs = two_variant_pairs(60, seed=0)
    data = helpers.binarize_pair(str(tmp_path / "corpus"), {"train": pairs, "valid": pairs[:12]})
    records = helpers.run_train(cvae_train_args(data, str(tmp_path / "ck"), extra=[
        "--max-update", "3", "--distributed-world-size", "1", "--eval-bleu", "--eval-bleu-args", '{"beam": 2}',
        "--eval-bleu-detok", "space", "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric"]))
    valid = [r for r in records if "valid_bleu" in r]
    assert valid and all(0 <= float(r["valid_bleu"]) <= 100 for r in valid)
    assert all("valid_kl" in r and "valid_nll_loss" in r for r in valid)


def pairwise_bleu(hypotheses) -> float:
    """Mean sacreBLEU of each sample against each other sample of its source (Shen et al. 2019)."""
    import itertools

    import sacrebleu

    scores = [sacrebleu.sentence_bleu(a, [b]).score
              for samples in hypotheses.values() for a, b in itertools.permutations(samples, 2)]
    return sum(scores) / len(scores)


def test_pairwise_bleu_falls_as_the_prior_temperature_rises(trained):
    data, checkpoint, _ = trained
    by_temperature = {}
    for temperature in ("0", "1", "3"):
        hypotheses = generate(data, checkpoint, "--task", "latent_translation", "--latent-mode", "prior-sample",
                              "--samples-per-source", "5", "--beam", "1", "--prior-temperature", temperature)
        assert all(len(samples) == 5 for samples in hypotheses.values())
        by_temperature[temperature] = pairwise_bleu(hypotheses)
    assert by_temperature["0"] == pytest.approx(100.0)  # every draw is the prior's mean
    assert by_temperature["0"] > by_temperature["1"] > by_temperature["3"], by_temperature


def test_distinct_draws_at_temperature_zero_are_the_prior_means_k_best_list(trained):
    """Every draw at temperature 0 is the prior's mean, so its beam is the prior-mean
    beam: plain draws repeat its best hypothesis K times, --distinct-draws walks down it
    and gives the beam's K-best list; at temperature 1 no source repeats a translation."""
    data, checkpoint, test = trained
    flags = ["--task", "latent_translation", "--latent-mode", "prior-sample", "--samples-per-source", "4"]
    k_best = generate(data, checkpoint, "--task", "latent_translation", "--nbest", "4")
    plain = generate(data, checkpoint, *flags, "--prior-temperature", "0")
    assert all(h == [k_best[i][0]] * 4 for i, h in plain.items())
    distinct = generate(data, checkpoint, *flags, "--prior-temperature", "0", "--distinct-draws")
    assert distinct == k_best and all(len(set(h)) == 4 for h in distinct.values())
    drawn = generate(data, checkpoint, *flags, "--distinct-draws")
    assert sorted(drawn) == list(range(len(test))) and all(len(set(h)) == 4 for h in drawn.values())
    # a draw keeps its own best unless an earlier draw took it
    first = generate(data, checkpoint, *flags)
    assert all(d[0] == f[0] for d, f in zip(drawn.values(), first.values()))
    assert sum(d != f for d, f in zip(drawn.values(), first.values())) >= 1


def distinct_hypotheses(*tokens):
    return [{"tokens": torch.tensor(t)} for t in tokens]


def test_a_draw_short_of_unused_hypotheses_keeps_its_best_and_every_draw_gives_nbest():
    from fairseq_vrae.generation.translation.prior_sample import distinct_draws

    beams = [distinct_hypotheses([1], [2], [3]), distinct_hypotheses([1], [2], [4]), distinct_hypotheses([2], [1])]
    kept = [h["tokens"].tolist() for h in distinct_draws(beams, 1)]
    assert kept == [[1], [2], [2]]  # the third draw's beam holds nothing unused
    kept = [h["tokens"].tolist() for h in distinct_draws(beams, 2)]
    assert kept == [[1], [2], [4], [1], [2], [1]]


def test_each_prior_slot_learns_one_of_the_two_translations_of_a_source(tmp_path):
    """Trained with the best of two fixed slots (--prior-draws 2 --prior-draw-slots), the two
    slots of most sources translate it the two ways the data does (word for word and through
    the substitution), whatever --seed; the model's own random draws cover both far less often."""
    test = two_variant_pairs(40, seed=1)
    data = helpers.binarize_pair(str(tmp_path / "corpus"), {"train": two_variant_pairs(600, seed=0), "valid": test,
                                                             "test": test})
    save_dir = str(tmp_path / "checkpoints")
    helpers.run_train(cvae_train_args(data, save_dir, extra=["--max-update", "500", "--distributed-world-size", "1",
                                                             "--prior-draws", "2", "--prior-draw-slots"]))
    checkpoint = os.path.join(save_dir, "checkpoint_last.pt")

    def both_ways(mode, *flags):
        hypotheses = generate(data, checkpoint, "--task", "latent_translation", "--latent-mode", mode,
                              "--samples-per-source", "2", *flags)
        assert all(len(h) == 2 for h in hypotheses.values())
        covered = sum(any(h == t for h in hypotheses[i]) and any(h != t for h in hypotheses[i])
                      for i, (_, t) in enumerate(test))
        return hypotheses, covered / len(test)

    slots, covered = both_ways("prior-slots")
    assert covered >= 0.75, slots
    assert both_ways("prior-slots", "--seed", "11")[0] == slots  # the slots do not depend on the seed
    assert both_ways("prior-sample")[1] < covered - 0.2
    import fairseq_vrae  # noqa: F401  (registers the models)

    hub = CVAETransformerModel.from_pretrained(save_dir, "checkpoint_last.pt", data, latent_mode="prior-slots",
                                               samples_per_source=2)
    hub.eval()
    hypotheses = hub.generate([hub.encode(test[0][0])], beam=4)[0]
    assert [hub.decode(h["tokens"]) for h in hypotheses] == slots[0]


def test_every_translation_mode_is_a_registered_file_offered_by_latent_mode():
    from fairseq_vrae.generation.translation import TRANSLATION_MODES
    from fairseq_vrae.tasks.latent_translation import LatentTranslationConfig

    choices = LatentTranslationConfig.__dataclass_fields__["latent_mode"].type
    assert set(TRANSLATION_MODES) == {"prior-mean", "prior-sample", "prior-slots", "posterior-mean"}
    assert set(TRANSLATION_MODES) <= set(str(c) for c in choices)
    for name, cls in TRANSLATION_MODES.items():
        assert cls.name == name and cls.__module__.startswith("fairseq_vrae.generation.translation.")


def test_each_translation_mode_declares_options_of_the_task_and_inputs_the_encoder_takes():
    import inspect

    from fairseq_vrae.generation.translation import TRANSLATION_MODES
    from fairseq_vrae.models.cvae import CVAEEncoder
    from fairseq_vrae.tasks.latent_translation import LatentTranslationConfig

    fields = set(LatentTranslationConfig.__dataclass_fields__)
    encoder_inputs = set(inspect.signature(CVAEEncoder.forward).parameters)
    for name, cls in TRANSLATION_MODES.items():
        assert set(cls.options) <= fields, name
        assert set(cls.input_keys) <= encoder_inputs, name
    assert TRANSLATION_MODES["prior-sample"].options and TRANSLATION_MODES["posterior-mean"].input_keys
