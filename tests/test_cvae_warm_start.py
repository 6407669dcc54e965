"""--load-pretrained-encoder-from / --load-pretrained-decoder-from: a conditional VAE that
starts as the user's fairseq translation model."""

import os

import pytest

import helpers
from test_cvae import TINY_TRANSFORMER, cvae_train_args, run, two_variant_pairs

TINY_LSTM = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-hidden-size", "32",
             "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32", "--share-all-embeddings"]
FAMILIES = {"cvae_transformer": ("transformer", TINY_TRANSFORMER), "cvae_lstm": ("lstm", TINY_LSTM)}
# fairseq's lstm ties its output layer whenever it shares all embeddings; cvae_lstm is told
CVAE_FLAGS = {"cvae_transformer": [], "cvae_lstm": ["--share-decoder-input-output-embed"]}


@pytest.fixture(scope="module")
def translation_models(tmp_path_factory):
    """A tiny fairseq transformer and lstm trained on the two-variant pairs."""
    root = tmp_path_factory.mktemp("mt")
    test = two_variant_pairs(20, seed=1)
    data = helpers.binarize_pair(str(root / "corpus"), {"train": two_variant_pairs(400, seed=0), "valid": test, "test": test})
    checkpoints = {}
    for cvae_arch, (arch, sizes) in FAMILIES.items():
        save = str(root / arch)
        helpers.run_train([data, "--task", "translation", "-s", "en", "-t", "de", "--arch", arch, *sizes,
                           "--dropout", "0", "--optimizer", "adam", "--lr", "0.005", "--max-tokens", "1200",
                           "--max-update", "60", "--criterion", "cross_entropy", "--cpu", "--num-workers", "0",
                           "--distributed-world-size", "1", "--save-dir", save, "--no-epoch-checkpoints", "--seed", "3"])
        checkpoints[cvae_arch] = os.path.join(save, "checkpoint_last.pt")
    return data, checkpoints, root


def generate(data, checkpoint, task, *flags):
    out = run("fairseq-generate", data, "--user-dir", helpers.USER_DIR, "--task", task,
              "-s", "en", "-t", "de", "--path", checkpoint, "--gen-subset", "test", "--cpu",
              "--batch-size", "8", "--beam", "5", *flags)
    return sorted(line.split("\t", 1)[0] + "\t" + line.split("\t")[2] for line in out.splitlines() if line.startswith("H-"))


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_the_warm_started_cvae_translates_as_the_translation_model_before_any_update(translation_models, arch):
    data, checkpoints, root = translation_models
    base = checkpoints[arch]
    save = str(root / f"{arch}-warm")
    # one update at learning rate 0: the checkpoint holds the warm-started weights unchanged;
    # both paths that can start silent are open
    helpers.run_train(cvae_train_args(data, save, arch, extra=[*CVAE_FLAGS[arch],
        "--latent-injection", "embedding+output", "--load-pretrained-encoder-from", base,
        "--load-pretrained-decoder-from", base, "--lr", "0", "--warmup-updates", "1", "--max-update", "1",
        "--distributed-world-size", "1", "--disable-validation"]))
    warm = os.path.join(save, "checkpoint_last.pt")
    expected = generate(data, base, "translation")
    assert len(expected) == 20
    assert generate(data, warm, "latent_translation") == expected  # prior mean: z's paths are silent
    # a CVAE from scratch translates otherwise: the translation model's weights are what made it equal
    cold = str(root / f"{arch}-cold")
    helpers.run_train(cvae_train_args(data, cold, arch, extra=[*CVAE_FLAGS[arch],
        "--latent-injection", "embedding", "--lr", "0", "--warmup-updates", "1", "--max-update", "1",
        "--distributed-world-size", "1", "--disable-validation"]))
    assert generate(data, os.path.join(cold, "checkpoint_last.pt"), "latent_translation") != expected


def build(data, arch, extra):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = cvae_train_args(data, "/nonexistent", arch, extra=list(extra))
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    return task.build_model(cfg.model)


def test_cvae_warm_start_refusals_name_the_fix(translation_models):
    data, checkpoints, _ = translation_models
    base = checkpoints["cvae_transformer"]
    with pytest.raises(ValueError, match=r"--latent-injection both: .* set --latent-injection embedding, output or"):
        build(data, "cvae_transformer", ["--load-pretrained-decoder-from", base])
    with pytest.raises(ValueError, match=r"decoder.layers.0.fc1.weight is \(64, 32\) .* \(128, 32\).*size options"):
        build(data, "cvae_transformer", ["--latent-injection", "embedding", "--decoder-ffn-embed-dim", "128",
                                         "--load-pretrained-decoder-from", base])
    with pytest.raises(ValueError, match=r"--decoder-normalize-before False, the CVAE True; set it to match"):
        build(data, "cvae_transformer", ["--latent-injection", "embedding", "--decoder-normalize-before",
                                         "--load-pretrained-decoder-from", base])
    with pytest.raises(ValueError, match=r"is a 'transformer' checkpoint; --arch cvae_lstm starts from fairseq's LSTMModel"):
        build(data, "cvae_lstm", ["--latent-injection", "embedding", "--load-pretrained-encoder-from", base])


def setup_training(data, base, extra):
    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = cvae_train_args(data, "/nonexistent", "cvae_transformer", extra=[
        "--task", "latent_translation", "--latent-injection", "output", "--load-pretrained-encoder-from", base,
        "--load-pretrained-decoder-from", base, *extra])
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    task.load_dataset("train")
    batch = task.dataset("train").collater([task.dataset("train")[i] for i in range(8)])
    return task, model, criterion, optimizer, batch


def test_warm_start_optimizer_gives_each_shared_parameter_the_translation_models_adam_state(translation_models):
    """--warm-start-optimizer: before the first update, every parameter the CVAE took from the
    transformer holds the Adam state that fairseq's own loading gives that parameter of the
    transformer (its moments and step count); z's own parameters hold none.  A run that
    resumes (update > 0) carries nothing: its checkpoint has its own state."""
    import torch
    from fairseq import checkpoint_utils, optim

    data, checkpoints, _ = translation_models
    base = checkpoints["cvae_transformer"]
    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task([base])
    reference = optim.build_optimizer(cfg.optimizer, list(models[0].parameters()))
    reference.load_state_dict(checkpoint_utils.load_checkpoint_to_cpu(base)["last_optimizer_state"])
    # (fairseq's transformer layers also hold copies of their weights for a fused inference path,
    # which get no gradient and so no state)
    expected = {name: reference.optimizer.state[p] for name, p in models[0].named_parameters()
                if reference.optimizer.state[p]}
    assert len(expected) > 20 and all(state["step"] == 60 for state in expected.values())

    task, model, criterion, optimizer, batch = setup_training(data, base, ["--warm-start-optimizer"])
    model.train()
    task.train_step(batch, model, criterion, optimizer, update_num=0)
    sides = {"encoder": model.encoder.source_network, "decoder": model.decoder}
    carried = set()
    for name, state in expected.items():
        side, rest = name.split(".", 1)
        param = sides[side].get_parameter(rest)
        ours = optimizer.optimizer.state[param]
        assert ours["step"] == state["step"]
        assert torch.equal(ours["exp_avg"], state["exp_avg"]) and torch.equal(ours["exp_avg_sq"], state["exp_avg_sq"])
        carried.add(id(param))
    fresh = [p for p in model.parameters() if id(p) not in carried]
    assert len(fresh) > 0 and all(len(optimizer.optimizer.state[p]) == 0 for p in fresh)
    assert len([p for p in model.parameters() if optimizer.optimizer.state[p]]) == len(expected)

    task, model, criterion, optimizer, batch = setup_training(data, base, ["--warm-start-optimizer"])
    task.train_step(batch, model, criterion, optimizer, update_num=5)
    assert all(len(optimizer.optimizer.state[p]) == 0 for p in model.parameters())


def test_warm_start_optimizer_refusals_name_the_fix(translation_models, tmp_path):
    data, checkpoints, _ = translation_models
    base = checkpoints["cvae_transformer"]
    with pytest.raises(ValueError, match=r"--warm-start-optimizer carries .* --load-pretrained-encoder-from"):
        build(data, "cvae_transformer", ["--task", "latent_translation", "--latent-injection", "output",
                                         "--warm-start-optimizer"])
    task, model, criterion, optimizer, batch = setup_training(data, base, ["--warm-start-optimizer", "--optimizer",
                                                                           "sgd"])
    with pytest.raises(ValueError, match=r"trained with FairseqAdam, this run uses SGD; give the run the checkpoint's --optimizer"):
        task.train_step(batch, model, criterion, optimizer, update_num=0)
    import torch
    stripped = str(tmp_path / "weights_only.pt")
    state = torch.load(base, weights_only=False)
    state["last_optimizer_state"] = None
    torch.save(state, stripped)
    task, model, criterion, optimizer, batch = setup_training(data, stripped, ["--warm-start-optimizer"])
    with pytest.raises(ValueError, match=r"holds no optimizer state .* drop --warm-start-optimizer"):
        task.train_step(batch, model, criterion, optimizer, update_num=0)


def test_fine_tuning_with_warm_start_optimizer_continues_the_translation_models_adam_steps(translation_models):
    """Through fairseq-train: after 3 updates, each parameter taken from the transformer has
    taken Adam's 60 + 3 steps, z's own parameters 3."""
    import torch

    data, checkpoints, root = translation_models
    base = checkpoints["cvae_transformer"]
    save = str(root / "carried")
    helpers.run_train(cvae_train_args(data, save, "cvae_transformer", extra=[
        "--task", "latent_translation", "--warm-start-optimizer", "--latent-injection", "output",
        "--load-pretrained-encoder-from", base, "--load-pretrained-decoder-from", base, "--max-update", "3",
        "--distributed-world-size", "1", "--disable-validation"]))
    steps = sorted({state["step"] for state in
                    torch.load(os.path.join(save, "checkpoint_last.pt"), weights_only=False)["last_optimizer_state"]["state"].values()})
    assert steps == [3, 63]
