"""Data-parallel training through torchrun on CPU (gloo, legacy_ddp): the multi-GPU path."""

import os
import re
import shutil
import socket
import subprocess
import sys


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
