"""fairseq-train --tensorboard-logdir records the VAE's curves (tensorboardX is installed
by the set-up)."""

import glob
import json
import os
import struct
import subprocess
import sys

import pytest

import helpers


def read_scalars(folder: str) -> dict:
    """{tag: {step: value}} from the TFRecord event files tensorboardX wrote in ``folder``."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        with open(path, "rb") as handle:
            data = handle.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            record = data[offset + 12 : offset + 12 + length]  # after length and its CRC
            offset += 12 + length + 4  # the record and its CRC
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_training_curves_reach_tensorboard(tmp_path):
    data = helpers.binarize(str(tmp_path / "corpus"), {
        "train": helpers.random_sentences(60), "valid": helpers.random_sentences(10, seed=1),
    })
    logdir = str(tmp_path / "tensorboard")
    # a process of its own: tensorboardX writes its last events when the process exits
    done = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.train", *helpers.vrae_train_args(data, str(tmp_path / "checkpoints"), [
            "--max-update", "6", "--kl-schedule", "linear", "--kl-warmup-updates", "4",
            "--tensorboard-logdir", logdir,
        ])],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Please install tensorboardX" not in done.stdout + done.stderr
    records = [
        dict(json.loads(line[line.index("{"):]), _logger=line.split(" | ")[2])
        for line in (done.stdout + done.stderr).splitlines() if " | INFO | " in line and line.endswith("}")
        and line.split(" | ")[2] in ("train_inner", "valid")
    ]
    train_inner = read_scalars(os.path.join(logdir, "train_inner"))
    valid = read_scalars(os.path.join(logdir, "valid"))
    for tag in ("rec", "kl", "kl_weight", "elbo", "ppl", "loss"):
        assert tag in train_inner, sorted(train_inner)
    for tag in ("rec", "kl", "elbo", "au", "loss"):
        assert tag in valid, sorted(valid)

    # the curves hold what the log printed, update by update
    logged = {int(r["num_updates"]): r for r in helpers.train_inner_records(records)}
    assert sorted(train_inner["kl_weight"]) == sorted(logged) == [1, 2, 3, 4, 5, 6]
    for step, record in logged.items():
        for tag in ("rec", "kl", "kl_weight"):
            assert train_inner[tag][step] == pytest.approx(float(record[tag]), abs=1e-3), (tag, step)
    # beta follows the linear schedule: (update - 1) / 4 at the update's start, capped at 1
    assert [round(train_inner["kl_weight"][s], 4) for s in range(1, 7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    valid_records = [r for r in records if r.get("_logger") == "valid"]
    assert valid["au"][int(valid_records[-1]["valid_num_updates"])] == float(valid_records[-1]["valid_au"])
