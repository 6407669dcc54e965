"""--load-pretrained-decoder-from: a VAE whose decoder starts as the user's fairseq LM."""

import os
import shutil

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import helpers

LSTM_SIZES = ["--embed-dim", "16", "--encoder-hidden-size", "16", "--decoder-hidden-size", "16", "--latent-dim", "4"]
TRANSFORMER_SIZES = ["--arch", "vrae_transformer", "--embed-dim", "16", "--ffn-embed-dim", "32", "--attention-heads", "2",
                     "--encoder-layers", "1", "--decoder-layers", "2", "--latent-dim", "4", "--latent-injection", "embedding+output"]


def lm_args(data, save_dir, arch_args):
    return [data, "--task", "language_modeling", "--sample-break-mode", "eos", *arch_args,
            "--criterion", "cross_entropy", "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "200",
            "--max-update", "15", "--cpu", "--num-workers", "0", "--distributed-world-size", "1",
            "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "json", "--seed", "3",
            "--dropout", "0.3"]


LSTM_LM = ["--arch", "lstm_lm", "--decoder-embed-dim", "16", "--decoder-hidden-size", "16",
           "--decoder-out-embed-dim", "16", "--decoder-layers", "1"]
TRANSFORMER_LM = ["--arch", "transformer_lm", "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "32",
                  "--decoder-layers", "2", "--decoder-attention-heads", "2", "--decoder-input-dim", "16",
                  "--decoder-output-dim", "16", "--share-decoder-input-output-embed", "--tokens-per-sample", "64"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    data = helpers.binarize(str(root / "corpus"), {"train": helpers.random_sentences(160, seed=0),
                                                   "valid": helpers.random_sentences(30, seed=1)})
    lms = {}
    for name, arch in (("lstm", LSTM_LM), ("transformer", TRANSFORMER_LM)):
        helpers.run_train(lm_args(data, str(root / name), arch))
        lms[name] = str(root / name / "checkpoint_last.pt")
    return data, lms, root


def lm_nll_per_token(data, checkpoint):
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    model, criterion = models[0].eval(), task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    total = tokens = 0.0
    with torch.no_grad():
        for sample in task.get_batch_iterator(task.dataset("valid"), max_tokens=500).next_epoch_itr(shuffle=False):
            loss, _, log = criterion(model, sample)
            total, tokens = total + float(loss), tokens + log["ntokens"]
    return total / tokens, tokens


def vae_args(data, save_dir, extra):
    """helpers.vrae_train_args, without its LSTM sizes for a vrae_transformer."""
    argv = helpers.vrae_train_args(data, save_dir, extra)
    if "vrae_transformer" in extra:
        for option in ("--encoder-hidden-size", "--decoder-hidden-size"):
            at = argv.index(option)
            del argv[at:at + 2]
    return argv


def build_vae(data, extra):
    argv = vae_args(data, "/nonexistent", extra)
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model), task.build_criterion(cfg.criterion), cfg


def vae_rec_per_token(task, model, criterion):
    model.eval()
    task.load_dataset("valid")
    total = tokens = 0.0
    with torch.no_grad():
        for sample in task.get_batch_iterator(task.dataset("valid"), max_tokens=500).next_epoch_itr(shuffle=False):
            _, _, log = criterion(model, sample)
            total, tokens = total + float(log["rec"]), tokens + log["ntokens"]
    return total / tokens, tokens


@pytest.mark.parametrize("family, sizes", [("lstm", LSTM_SIZES + ["--decoder-latent-input"]),
                                           ("lstm", LSTM_SIZES + ["--encoder-bidirectional", "--posterior-bn-gamma", "0.6"]),
                                           ("transformer", TRANSFORMER_SIZES)])
def test_the_warm_started_vae_reconstructs_with_exactly_the_lms_likelihood(corpus, family, sizes):
    data, lms, _ = corpus
    lm_nll, lm_tokens = lm_nll_per_token(data, lms[family])
    task, model, criterion, cfg = build_vae(data, sizes + ["--load-pretrained-decoder-from", lms[family]])
    rec, tokens = vae_rec_per_token(task, model, criterion)
    assert tokens == lm_tokens  # the same sentences, </s> counted, no BOS
    assert rec == pytest.approx(lm_nll, abs=1e-4)
    # a VAE from scratch is nowhere near: the LM's weights are what made it equal
    _, cold, cold_criterion, _ = build_vae(data, sizes)
    assert vae_rec_per_token(task, cold, cold_criterion)[0] > lm_nll + 0.1


def test_warm_start_trains_and_its_checkpoint_loads_without_the_lm(corpus, tmp_path):
    data, lms, _ = corpus
    lm = str(tmp_path / "lm.pt")
    shutil.copy(lms["lstm"], lm)
    save = tmp_path / "vae"
    records = helpers.run_train(helpers.vrae_train_args(data, str(save), LSTM_SIZES + [
        "--load-pretrained-decoder-from", lm, "--load-pretrained-encoder-embed", "--max-update", "3"]))
    assert [r for r in records if r.get("_logger") == "valid"]
    os.remove(lm)
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(save / "checkpoint_last.pt")],
                                                                 arg_overrides={"data": data})
    assert models[0].decoder.embed_tokens.weight.shape[1] == 16


def test_warm_start_copies_the_embeddings_into_the_encoder_when_asked(corpus):
    data, lms, _ = corpus
    _, model, _, _ = build_vae(data, LSTM_SIZES + ["--load-pretrained-decoder-from", lms["lstm"],
                                                   "--load-pretrained-encoder-embed"])
    lm_embed = checkpoint_utils.load_checkpoint_to_cpu(lms["lstm"])["model"]["decoder.embed_tokens.weight"]
    assert torch.equal(model.encoder.embed_tokens.weight, lm_embed)
    _, plain, _, _ = build_vae(data, LSTM_SIZES + ["--load-pretrained-decoder-from", lms["lstm"]])
    assert not torch.equal(plain.encoder.embed_tokens.weight, lm_embed)


@pytest.mark.parametrize("extra, message", [
    (LSTM_SIZES[:-6] + ["--encoder-hidden-size", "16", "--decoder-hidden-size", "24", "--latent-dim", "4"],
     r"hidden size .* is 16, the VAE's 24; set --decoder-hidden-size"),
    (LSTM_SIZES + ["--decoder-layers", "2"], r"number of layers .* is 1, the VAE's 2; set --decoder-layers"),
    (LSTM_SIZES + ["--tie-output-embeddings"], r"--share-decoder-input-output-embed is False.*--tie-output-embeddings"),
    (LSTM_SIZES + ["--decoder-cell", "gru"], r"cell is lstm, the VAE's gru; set --decoder-cell lstm"),
])
def test_warm_start_refuses_sizes_the_vae_does_not_match_and_names_the_option(corpus, extra, message):
    data, lms, _ = corpus
    with pytest.raises(ValueError, match=message):
        build_vae(data, extra + ["--load-pretrained-decoder-from", lms["lstm"]])


def test_warm_start_refuses_another_dictionary_with_both_sizes(corpus, tmp_path):
    data, lms, _ = corpus
    other = helpers.binarize(str(tmp_path / "other"), {"train": ["x y z", "y z"], "valid": ["x z"]})
    with pytest.raises(ValueError, match=r"dictionary of \d+ entries, the VAE's data has \d+; .*--srcdict"):
        build_vae(other, LSTM_SIZES + ["--load-pretrained-decoder-from", lms["lstm"]])


def test_warm_start_refuses_a_checkpoint_of_another_architecture(corpus):
    data, lms, _ = corpus
    with pytest.raises(ValueError, match=r"is a 'transformer_lm' checkpoint; --arch vrae_lstm starts from fairseq's lstm_lm"):
        build_vae(data, LSTM_SIZES + ["--load-pretrained-decoder-from", lms["transformer"]])
    with pytest.raises(ValueError, match=r"--latent-injection embedding"):
        build_vae(data, TRANSFORMER_SIZES[:-2] + ["--load-pretrained-decoder-from", lms["transformer"]])
    with pytest.raises(ValueError, match=r"no such file"):
        build_vae(data, LSTM_SIZES + ["--load-pretrained-decoder-from", "/nonexistent/lm.pt"])


def test_encoder_and_decoder_dropout_are_set_apart():
    from fairseq_vrae.models.vrae import VRAEConfig, VRAEModel
    from test_model import TinyTask, make_dictionary

    cfg = VRAEConfig(embed_dim=8, encoder_hidden_size=8, decoder_hidden_size=8, latent_dim=2, dropout=0.3,
                     dropout_in=0.5, decoder_dropout_out=0.2, encoder_dropout_in=0.0)
    model = VRAEModel.build_model(cfg, TinyTask(make_dictionary()))
    assert model.encoder.dropout_in.p == 0.0  # its own option
    assert model.encoder.dropout_out.p == 0.3  # --dropout
    assert model.decoder.dropout_in.p == 0.5  # --dropout-in, both sides
    assert model.decoder.dropout_out.p == 0.2  # its own option
