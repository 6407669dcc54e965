"""One small checkpoint per model family, saved by an earlier version of the code, and
what it decoded then: ``tests/data/checkpoints/``.  Every run that resumes or evaluates
a checkpoint from before a refactoring relies on the code still loading it and decoding
it the same; ``test_saved_checkpoints.py`` checks that.

Write the files again (only when a change is meant to alter what a checkpoint decodes,
and say so in the commit) with

    python tests/saved_checkpoints.py
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import helpers

HERE = os.path.dirname(os.path.abspath(__file__))
DIRECTORY = os.path.join(HERE, "data", "checkpoints")
EXPECTED = os.path.join(DIRECTORY, "expected.json")
BIN = os.path.dirname(sys.executable)

TINY_TRANSFORMER = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
                    "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
                    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
TRANSLATION_SIZES = {
    "cvae_transformer": [*TINY_TRANSFORMER, "--share-all-embeddings"],
    "cvae_lstm": ["--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-hidden-size", "16",
                  "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16", "--share-all-embeddings"],
}

#: family -> (task kind, extra training flags)
FAMILIES = {
    "vrae_lstm": ("lm", ["--posterior-bn-gamma", "0.6"]),
    "vrae_gru": ("lm", ["--arch", "vrae_gru", "--word-dropout", "0.2"]),
    "vrae_transformer": ("lm", ["--arch", "vrae_transformer", "--ffn-embed-dim", "32", "--attention-heads", "2",
                                "--latent-injection", "embedding"]),
    "cvae_transformer": ("translation", []),
    "cvae_lstm": ("translation", []),
}

#: task kind -> the decodings recorded, as fairseq-generate flags
DECODINGS = {
    "lm": {"posterior-mean": ["--beam", "1"],
           "prior": ["--latent-mode", "prior", "--num-samples", "3", "--seed", "1", "--beam", "1"]},
    "translation": {"prior-mean": ["--latent-mode", "prior-mean", "--beam", "2"],
                    "posterior-mean": ["--latent-mode", "posterior-mean", "--beam", "1"],
                    "prior-sample": ["--latent-mode", "prior-sample", "--samples-per-source", "2", "--seed", "1",
                                     "--beam", "1"]},
}


def pairs(count: int, seed: int):
    import random

    rng = random.Random(seed)
    words = helpers.WORDS
    out = []
    for _ in range(count):
        source = [rng.choice(words[:12]) for _ in range(rng.randint(3, 6))]
        out.append((" ".join(source), " ".join(words[words.index(w) + 12] for w in source)))
    return out


def corpus(kind: str, workdir: str) -> str:
    """The binarized data every checkpoint here was trained on (deterministic)."""
    if kind == "lm":
        return helpers.binarize(os.path.join(workdir, "lm"), {
            "train": helpers.random_sentences(120, seed=11), "valid": helpers.random_sentences(6, seed=12),
            "test": helpers.random_sentences(6, seed=12)})
    return helpers.binarize_pair(os.path.join(workdir, "mt"), {
        "train": pairs(120, seed=11), "valid": pairs(6, seed=12), "test": pairs(6, seed=12)})


def train_args(family: str, data: str, save_dir: str):
    kind, extra = FAMILIES[family]
    if kind == "lm":
        argv = [*helpers.vrae_train_args(data, save_dir, ["--max-update", "80", "--disable-validation"]), *extra]
        if family == "vrae_transformer":  # one --embed-dim for the whole model
            for size_flag in ("--encoder-hidden-size", "--decoder-hidden-size"):
                position = argv.index(size_flag)
                del argv[position: position + 2]
        return argv
    return [data, "--user-dir", helpers.USER_DIR, "--task", "translation", "-s", "en", "-t", "de",
            "--arch", family, *TRANSLATION_SIZES[family], "--latent-dim", "4", "--dropout", "0",
            "--optimizer", "adam", "--lr", "0.01", "--criterion", "vrae_elbo", "--bow-loss-weight", "1",
            "--max-tokens", "400", "--max-update", "80", "--disable-validation", "--cpu", "--num-workers", "0",
            "--distributed-world-size", "1", "--save-dir", save_dir, "--no-epoch-checkpoints", "--seed", "3",
            *extra]


def task_flags(kind: str):
    if kind == "lm":
        return ["--user-dir", helpers.USER_DIR, "--task", "vrae_lm"]
    return ["--user-dir", helpers.USER_DIR, "--task", "latent_translation", "-s", "en", "-t", "de"]


def decode(family: str, data: str, checkpoint: str) -> dict:
    """What the checkpoint decodes (the H- lines of each recorded mode) and the KL that
    fairseq-validate reports on the test split (closed form at the posterior, so
    deterministic, unlike the reconstruction term, whose z is drawn unseeded)."""
    kind, _ = FAMILIES[family]
    out = {}
    for mode, flags in DECODINGS[kind].items():
        done = subprocess.run([os.path.join(BIN, "fairseq-generate"), data, "--path", checkpoint,
                               *task_flags(kind), "--gen-subset", "test", "--cpu", "--batch-size", "8", *flags],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        out[mode] = sorted(line for line in done.stdout.splitlines() if line.startswith("H-"))
    done = subprocess.run([os.path.join(BIN, "fairseq-validate"), data, "--path", checkpoint, *task_flags(kind),
                           "--valid-subset", "test", "--cpu", "--batch-size", "8"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"valid on 'test' subset \|.* \| kl ([0-9.]+) \|", done.stdout + done.stderr)
    assert found, (done.stdout + done.stderr)[-3000:]
    out["validate_kl"] = float(found.group(1))
    return out


def write() -> None:
    import torch

    os.makedirs(DIRECTORY, exist_ok=True)
    expected = {}
    with tempfile.TemporaryDirectory() as workdir:
        data_of = {kind: corpus(kind, workdir) for kind in DECODINGS}
        for family, (kind, _) in FAMILIES.items():
            data = data_of[kind]
            save_dir = os.path.join(workdir, family)
            helpers.run_train(train_args(family, data, save_dir))
            state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), map_location="cpu", weights_only=False)
            state["last_optimizer_state"] = None  # not needed to decode; keeps the file small
            path = os.path.join(DIRECTORY, f"{family}.pt")
            torch.save(state, path)
            expected[family] = decode(family, data, path)
            print(family, os.path.getsize(path), "bytes", file=sys.stderr)
    with open(EXPECTED, "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    write()
