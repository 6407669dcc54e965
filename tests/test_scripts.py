"""scripts/: training plots, the comparison table, the decoder reset of the free-bits recipe."""

import json
import math
import os
import sys

import pytest
import torch

import helpers
from conftest import SCRIPTS, load_script

compare_table = load_script("compare_table")
plot_training = load_script("plot_training")
reset_decoder = load_script("reset_decoder")


def write_json_log(path, records, logger="train_inner"):
    with open(path, "w") as handle:
        handle.write("2026-01-01 | INFO | fairseq_cli.train | not a record\n")
        for record in records:
            handle.write(f"2026-01-01 | INFO | {logger} | {json.dumps(record)}\n")


def test_training_curves_are_drawn_from_a_json_log(tmp_path):
    log = tmp_path / "train.log"
    records = [
        {"num_updates": str(u), "rec": str(50 - u), "kl": str(u / 10), "elbo": str(50 - u + u / 10), "kl_weight": str(min(1, u / 20)), "wps": "100"}
        for u in range(30, 0, -3)
    ]
    write_json_log(log, records)
    train, valid = plot_training.read_log([str(log)])
    assert [r["num_updates"] for r in train] == sorted(float(r["num_updates"]) for r in records)
    assert valid == []
    output = tmp_path / "curves.png"
    plot_training.plot_curves(train, valid, str(output))
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_log_without_vae_metrics_is_refused(tmp_path):
    log = tmp_path / "lm.log"
    write_json_log(log, [{"num_updates": "1", "loss": "5"}])
    with pytest.raises(SystemExit, match="kl"):
        plot_training.read_log([str(log)])


def test_pca_of_means_on_a_line_puts_all_variance_in_one_component(tmp_path):
    t = torch.linspace(-1, 1, 200).unsqueeze(1)
    direction = torch.tensor([[0.6, -0.8, 0.0, 0.0]])
    means = t * direction + torch.tensor([1.0, 2.0, 3.0, 4.0])
    first, second = plot_training.plot_pca(means, str(tmp_path / "pca.png"))
    assert first == pytest.approx(1.0, abs=1e-6)
    assert second == pytest.approx(0.0, abs=1e-6)


def test_comparison_rows_use_totals_for_the_language_model(tmp_path):
    lm = tmp_path / "lstm_lm"
    lm.mkdir()
    (lm / "wall").write_text("60\n30\n")
    write_json_log(lm / "train.log", [{"num_updates": "1", "wps": "10"}, {"num_updates": "2", "wps": "300"}, {"num_updates": "3", "wps": "500"}])
    (lm / "test.log").write_text(
        "2026 | INFO | test | valid on 'test' subset | loss 6.644 | ppl 100.02 | wps 0 | wpb 82430 | bsz 3761\n"
    )
    row = compare_table.row(str(lm), "lstm_lm")
    assert row[1] == "100.02"
    assert float(row[2]) == pytest.approx(6.644 * math.log(2) * 82430 / 3761, abs=0.01)
    assert row[7] == "400"  # median of the records after the first
    assert row[8] == "1.5 min"


def test_the_validation_table_reads_each_models_valid_log(tmp_path, capsys):
    for name, ppl in (("lstm_lm", "120.5"), ("bn-vae", None)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "wall").write_text("60\n")
        write_json_log(folder / "train.log", [{"num_updates": "1", "wps": "10"}, {"num_updates": "2", "wps": "20"}])
        (folder / "test.log").write_text("x | valid on 'test' subset | loss 9 | ppl 999.0 | wpb 10 | bsz 1\n")
        valid = (f"loss 6.9 | ppl {ppl} | wpb 70000 | bsz 3370" if ppl else
                 "loss 7 | iw_ppl 130.25 | iw_nll 110.1 | elbo 113.2 | kl 5.7 | mi 2.6 | au 32")
        (folder / "valid.log").write_text(f"x | valid on 'valid' subset | {valid}\n")
    compare_table.main([str(tmp_path), "lstm_lm", "bn-vae", "--split", "valid"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| model | valid PPL |")
    assert table[2].split(" | ")[1] == "120.50"
    assert table[3].split(" | ")[1:3] == ["130.25", "110.10"]


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ae"))
    data = helpers.binarize(workdir, {"train": helpers.random_sentences(60), "valid": helpers.random_sentences(8, seed=1)})
    save_dir = os.path.join(workdir, "ckpt")
    helpers.run_train(helpers.vrae_train_args(data, save_dir, ["--max-update", "5", "--kl-schedule", "constant", "--kl-weight", "0"]))
    return data, os.path.join(save_dir, "checkpoint_last.pt")


def test_reset_decoder_keeps_the_encoder_and_finetuning_starts_from_it(autoencoder, tmp_path):
    data, checkpoint = autoencoder
    output = str(tmp_path / "encoder_only.pt")
    replaced = reset_decoder.reset_decoder(checkpoint, output)
    before = torch.load(checkpoint, weights_only=True)["model"]
    after = torch.load(output, weights_only=True)["model"]
    assert replaced == sum(key.startswith("decoder.") for key in before)
    for key in before:
        same = torch.equal(before[key], after[key])
        assert same == key.startswith("encoder."), key

    records = helpers.run_train(helpers.vrae_train_args(
        data, str(tmp_path / "vae"), ["--max-update", "2", "--finetune-from-model", output, "--free-bits", "0.1"]
    ))
    updates = [int(r["num_updates"]) for r in helpers.train_inner_records(records)]
    assert updates == [1, 2]  # the update count starts again


def run_gpu_install(tmp_path, bundle, base_python):
    import subprocess

    env = dict(os.environ, BASE_PYTHON=base_python, VRAE_GPU_VENV=str(tmp_path / "venv"))
    return subprocess.run(["bash", os.path.join(SCRIPTS, "offline_gpu", "gpu_install.sh"), str(bundle)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_gpu_install_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "not-a-bundle").mkdir()
    done = run_gpu_install(tmp_path, tmp_path / "not-a-bundle", sys.executable)
    assert done.returncode == 2 and "is not a bundle from scripts/offline_gpu/gpu_bundle.sh" in done.stderr
    assert not (tmp_path / "venv").exists()


def test_gpu_install_refuses_a_python_without_torch(tmp_path):
    fake = tmp_path / "python-without-torch"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; sys.exit(1)'\n")
    fake.chmod(0o755)
    done = run_gpu_install(tmp_path, tmp_path, str(fake))
    assert done.returncode == 2 and "cannot import torch" in done.stderr


def test_paragraphs_join_consecutive_sentences_up_to_the_limit():
    make_paragraphs = load_script("make_paragraphs")

    sentences = ["a b c", "", "d e", "f g h i", "j " * 12, "k"]
    groups = list(make_paragraphs.paragraphs(sentences, max_tokens=6))
    assert groups == [["a b c", "d e"], ["f g h i"], [" ".join(["j"] * 12)], ["k"]]
    assert [w for g in groups for s in g for w in s.split()] == " ".join(sentences).split()  # nothing lost, in order


@pytest.mark.parametrize("system", ["moe", "cvae", "continued"])
def test_the_converge_bench_refuses_to_follow_a_transformer_that_has_not_converged(tmp_path, system):
    import subprocess

    data, out = tmp_path / "bin", tmp_path / "out"
    data.mkdir()
    (data / "prepare.json").write_text(json.dumps({"src_lang": "en", "tgt_lang": "de", "generation_flags": "--beam 5"}))
    (out / "transformer").mkdir(parents=True)
    (out / "transformer" / "checkpoint_best.pt").write_bytes(b"")  # a best checkpoint of a run still going
    env = dict(os.environ, BUDGET="converge", SYSTEMS=system, COMPARE_DIR=str(out))
    done = subprocess.run(["bash", os.path.join(SCRIPTS, "compare_mt.sh"), str(data)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "follow the converged transformer; run SYSTEMS=transformer first" in done.stderr
    assert sorted(os.listdir(out)) == ["transformer"]  # nothing trained
