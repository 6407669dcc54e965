"""The shipped YAML trains through fairseq-hydra-train with the settings it names."""

import json
import os
import re
import subprocess
import sys

import pytest

import helpers

CONFIG_DIR = os.path.join(helpers.USER_DIR, "config")


def hydra_records(output: str, logger_name: str) -> list:
    """JSON records of one logger from hydra's log format: [time][name][LEVEL] - {...}"""
    pattern = re.compile(r"\]\[" + re.escape(logger_name) + r"\]\[INFO\] - (\{.*\})$")
    return [json.loads(match.group(1)) for match in map(pattern.search, output.splitlines()) if match]


def test_the_shipped_config_trains_with_fairseq_hydra_train(tmp_path):
    from fairseq import checkpoint_utils

    data = helpers.binarize(str(tmp_path / "corpus"), {
        "train": helpers.random_sentences(80), "valid": helpers.random_sentences(10, seed=1),
    })
    save_dir = str(tmp_path / "checkpoints")
    command = [
        os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train"),
        "--config-dir", CONFIG_DIR, "--config-name", "vrae_lstm_ptb",
        f"task.data={data}", f"common.user_dir={helpers.USER_DIR}", f"checkpoint.save_dir={save_dir}",
        "common.cpu=true", "common.log_interval=1", "dataset.num_workers=0", "dataset.max_tokens=200",
        "optimization.max_update=5", "criterion.kl_warmup_updates=4",
        "model.embed_dim=16", "model.encoder_hidden_size=16", "model.decoder_hidden_size=16",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]

    inner = hydra_records(output, "train_inner")
    assert [int(r["num_updates"]) for r in inner] == [1, 2, 3, 4, 5]
    # the YAML's schedule (linear) with the overridden warm-up
    assert [float(r["kl_weight"]) for r in inner] == [0.0, 0.25, 0.5, 0.75, 1.0]
    valid = hydra_records(output, "valid")
    assert valid and "valid_au" in valid[-1] and "valid_elbo" in valid[-1]

    state = checkpoint_utils.load_checkpoint_to_cpu(os.path.join(save_dir, "checkpoint_last.pt"))
    cfg = state["cfg"]
    assert cfg.task._name == "vrae_lm" and cfg.model._name == "vrae_lstm" and cfg.criterion._name == "vrae_elbo"
    assert cfg.model.decoder_latent_input is True and cfg.model.latent_dim == 32
    assert cfg.criterion.free_bits == pytest.approx(0.25) and cfg.criterion.kl_schedule == "linear"
    assert cfg.optimization.clip_norm == pytest.approx(5.0)
    # z is concatenated to every decoder input: the decoder's first LSTM reads 16 + 32
    assert state["model"]["decoder.rnn.weight_ih_l0"].shape[1] == 16 + 32


def test_fairseq_hydra_train_starts_the_vae_from_an_lstm_lm(tmp_path):
    from test_warm_start import LSTM_LM, lm_args

    data = helpers.binarize(str(tmp_path / "corpus"), {
        "train": helpers.random_sentences(80), "valid": helpers.random_sentences(10, seed=1),
    })
    helpers.run_train(lm_args(data, str(tmp_path / "lm"), LSTM_LM))
    lm = str(tmp_path / "lm" / "checkpoint_last.pt")
    command = [
        os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train"),
        "--config-dir", CONFIG_DIR, "--config-name", "vrae_lstm_ptb",
        f"task.data={data}", f"common.user_dir={helpers.USER_DIR}", f"checkpoint.save_dir={tmp_path / 'vae'}",
        "common.cpu=true", "dataset.num_workers=0", "dataset.max_tokens=200", "optimization.max_update=2",
        "model.embed_dim=16", "model.encoder_hidden_size=16", "model.decoder_hidden_size=16",
        f"+model.load_pretrained_decoder_from={lm}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"loaded from the lstm_lm checkpoint {lm}" in output
