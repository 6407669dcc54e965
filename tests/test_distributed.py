"""Data-parallel training through torchrun on CPU (gloo, legacy_ddp): the multi-GPU path."""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

import helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_train(data, save_dir, max_update, extra=()):
    fairseq_train = shutil.which("fairseq-train", path=os.path.dirname(sys.executable))
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        fairseq_train, *helpers.vrae_train_args(data, save_dir, ["--max-update", str(max_update), *extra]),
        "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
    ]
    argv.remove("--distributed-world-size")
    argv.remove("1")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def test_two_workers_train_and_resume_without_extra_flags(tmp_path):
    data = helpers.binarize(str(tmp_path / "corpus"), {"train": helpers.random_sentences(120), "valid": helpers.random_sentences(10, seed=1)})
    save_dir = str(tmp_path / "checkpoints")
    first = torchrun_train(data, save_dir, 3)
    assert "distributed init (rank 1)" in first
    updates = [int(n) for n in re.findall(r'"num_updates": "(\d+)"', first)]
    assert max(updates) == 3

    resumed = torchrun_train(data, save_dir, 6)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 3 updates\)", resumed)
    inner = [int(n) for n in re.findall(r'train_inner \| \{.*?"num_updates": "(\d+)"', resumed)]
    assert inner == [4, 5, 6]


def inner_records(output: str) -> dict:
    records = {}
    for line in output.splitlines():
        if "| train_inner |" in line:
            record = json.loads(line[line.index("{"):])
            records[int(record["num_updates"])] = {k: float(v) for k, v in record.items() if _is_number(v)}
    return records


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def test_two_workers_log_the_totals_of_one_worker_with_update_freq_2(tmp_path):
    """Update 1 sees the same two batches and the same initial weights either way:
    worker r takes batches r, r + 2, ... and one worker with --update-freq 2 takes
    batches 0 and 1.  Without dropout the posterior (hence the closed-form KL) is
    deterministic, so the logged sums must agree; rec depends on each worker's own
    posterior noise, so it is compared within a tolerance."""
    data = helpers.binarize(str(tmp_path / "corpus"), {"train": helpers.random_sentences(160, seed=4), "valid": helpers.random_sentences(10, seed=1)})
    extra = ["--dropout", "0", "--kl-schedule", "constant", "--kl-weight", "0.5", "--max-update", "1"]
    single_out = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.train", *helpers.vrae_train_args(data, str(tmp_path / "one"), extra), "--update-freq", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert single_out.returncode == 0, single_out.stderr[-3000:]
    single = inner_records(single_out.stdout + single_out.stderr)[1]
    double = inner_records(torchrun_train(data, str(tmp_path / "two"), 1, ["--dropout", "0", "--kl-schedule", "constant", "--kl-weight", "0.5"]))[1]

    for key in ("bsz", "wpb", "kl", "kl_weight"):
        assert double[key] == pytest.approx(single[key], abs=2e-3), key
    assert double["bsz"] > 8  # both workers' sentences, not one worker's
    # rec depends on each worker's own posterior noise, which barely moves the decoder
    # at initialisation: per sentence it agrees within 1% (a sum over one worker, or
    # over both divided by one worker's sentences, would be off by about 2x)
    for key in ("rec", "elbo"):
        assert double[key] == pytest.approx(single[key], rel=1e-2), key


# --------------------------------------------------------------------------------------
# evaluation with several workers: logging outputs that cannot be summed are gathered


def validation_metrics(output: str) -> dict:
    """The last validation record fairseq printed (fairseq-train or fairseq-validate),
    without the ``valid_`` prefix."""
    found = None
    for line in output.splitlines():
        if ("| valid |" in line or "valid on 'valid' subset |" in line) and "{" in line:
            record = json.loads(line[line.index("{"):])
            found = {k[len("valid_"):]: float(v) for k, v in record.items() if k.startswith("valid_") and _is_number(v)}
    assert found is not None, output[-3000:]
    return found


def validate_command(data, checkpoint, workers):
    fairseq_validate = shutil.which("fairseq-validate", path=os.path.dirname(sys.executable))
    launcher = [sys.executable, fairseq_validate]
    if workers > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(workers),
                    "--master_addr", "127.0.0.1", "--master_port", str(free_port()), fairseq_validate,
                    "--distributed-backend", "gloo"]
    return [*launcher, data, "--user-dir", helpers.USER_DIR, "--task", "vrae_lm", "--path", checkpoint,
            "--valid-subset", "valid", "--batch-size", "128", "--iw-samples", "10", "--cpu",
            "--num-workers", "0", "--log-format", "json"]


@pytest.fixture(scope="module")
def large_validation_split(tmp_path_factory):
    """400 validation sentences with 16 latent dimensions: about 100 KB of posteriors,
    six times fairseq's default --all-gather-list-size."""
    workdir = tmp_path_factory.mktemp("gather")
    data = helpers.binarize(str(workdir / "corpus"), {
        "train": helpers.random_sentences(120), "valid": helpers.random_sentences(400, seed=9),
    })
    return data, workdir


def test_two_workers_train_and_validate_with_importance_samples(large_validation_split):
    data, workdir = large_validation_split
    save_dir = str(workdir / "two")
    trained = torchrun_train(data, save_dir, 20, [
        "--latent-dim", "16", "--iw-samples", "10", "--batch-size", "128", "--max-tokens", "4000",
        "--kl-schedule", "constant", "--kl-weight", "0",  # an autoencoder: several units active
    ])
    during_training = validation_metrics(trained)
    checkpoint = os.path.join(save_dir, "checkpoint_last.pt")

    one = subprocess.run(validate_command(data, checkpoint, 1), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(validate_command(data, checkpoint, 2), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    single, double = validation_metrics(one.stdout + one.stderr), validation_metrics(two.stdout + two.stderr)

    # the checkpoint holds the weights that were validated during training
    for workers in (double, during_training):
        assert workers["au"] == single["au"]
        for key in ("iw_nll", "mi", "elbo", "kl"):
            assert workers[key] == pytest.approx(single[key], rel=0.01), (key, workers, single)
    assert math.isfinite(single["mi"]) and single["au"] >= 1  # posteriors were gathered and used
    print("gathered validation", {"one worker": single, "two workers": double, "training": during_training})
