"""Raw text and translation data: scripts/prepare_text.sh's module and the side option."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from fairseq.data import data_utils
from fairseq.data.encoders.fastbpe import fastBPE, fastBPEConfig
from fairseq.data.encoders.moses_tokenizer import MosesTokenizer, MosesTokenizerConfig
from omegaconf import OmegaConf
from sacremoses import MosesPunctNormalizer

import fairseq_vrae  # noqa: F401
from fairseq_vrae import prepare_text
from fairseq_vrae.tasks.vrae_lm import VRAELanguageModelingConfig, VRAELanguageModelingTask

import helpers

RAW = [
    "The quick brown fox doesn't jump over the lazy dog.",
    "Prices rose 4.5% in 2023, said the well-known economist.",
    "\"Quotes\" and (brackets) are tokenised, aren't they?",
    "Mrs. Smith's cat — a Persian — sleeps all day!",
    "A state-of-the-art model costs $3,000 or €2,500.",
] * 8


def run_prepare(tmp_path, *argv):
    code = prepare_text.main([*argv, "--destdir", str(tmp_path / "bin")])
    return code, str(tmp_path / "bin")


def write(path, lines, newline="\n"):
    path.write_bytes(newline.join(lines).encode("utf-8") + newline.encode())
    return str(path)


def binarized_lines(destdir, split):
    task = VRAELanguageModelingTask.setup_task(
        OmegaConf.structured(VRAELanguageModelingConfig(data=destdir, seed=1, dataset_impl=None))
    )
    dataset = data_utils.load_indexed_dataset(os.path.join(destdir, split), task.dictionary)
    return [task.dictionary.string(dataset[i]) for i in range(len(dataset))]


def test_round_trip_gives_back_the_normalised_text(tmp_path):
    train = write(tmp_path / "train.txt", RAW)
    code, destdir = run_prepare(tmp_path, "--train", train, "--valid", train, "--bpe-merges", "60")
    assert code == 0
    bpe = fastBPE(fastBPEConfig(bpe_codes=os.path.join(destdir, "bpecodes")))
    moses = MosesTokenizer(MosesTokenizerConfig())
    lines = binarized_lines(destdir, "valid")
    assert any("@@" in line for line in lines)  # subwords were used
    normalise = MosesPunctNormalizer(lang="en")
    for encoded, raw in zip(lines, RAW):
        assert moses.decode(bpe.decode(encoded)) == normalise.normalize(raw).strip()


def test_codes_learned_twice_are_identical(tmp_path):
    train = write(tmp_path / "train.txt", RAW)
    codes = []
    for run in ("a", "b"):
        code, destdir = run_prepare(tmp_path / run, "--input", train, "--bpe-merges", "50", "--seed", "3")
        assert code == 0
        codes.append(open(os.path.join(destdir, "bpecodes")).read())
    assert codes[0] == codes[1] and len(codes[0].splitlines()) == 50


def test_single_file_is_split_reproducibly_and_word_level_works(tmp_path):
    lines = [f"sentence number {i} is here ." for i in range(200)]
    source = write(tmp_path / "all.txt", lines)
    code, destdir = run_prepare(tmp_path / "x", "--input", source, "--bpe", "none", "--keep-text")
    assert code == 0 and not os.path.exists(os.path.join(destdir, "bpecodes"))
    assert [len(binarized_lines(destdir, s)) for s in ("train", "valid", "test")] == [180, 10, 10]
    text = {s: open(os.path.join(destdir, f"{s}.txt")).read().splitlines() for s in ("train", "valid", "test")}
    assert sorted(sum(text.values(), [])) == sorted(lines)
    _, again = run_prepare(tmp_path / "y", "--input", source, "--bpe", "none", "--keep-text")
    assert open(os.path.join(again, "test.txt")).read().splitlines() == text["test"]


def test_lowercasing_is_optional(tmp_path):
    source = write(tmp_path / "all.txt", RAW)
    _, destdir = run_prepare(tmp_path / "x", "--train", source, "--bpe", "none", "--lowercase")
    assert binarized_lines(destdir, "train")[0].startswith("the quick brown fox")


def test_windows_line_endings_give_the_same_data(tmp_path):
    unix = write(tmp_path / "unix.txt", RAW)
    windows = write(tmp_path / "windows.txt", RAW, newline="\r\n")
    _, a = run_prepare(tmp_path / "a", "--train", unix, "--bpe", "none")
    _, b = run_prepare(tmp_path / "b", "--train", windows, "--bpe", "none")
    assert binarized_lines(a, "train") == binarized_lines(b, "train")
    assert not any("\r" in line for line in binarized_lines(b, "train"))


def test_bad_bytes_are_reported_with_file_and_line(tmp_path, caplog):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nanother fine line\ncaf\xe9 latin-1\n")
    code, _ = run_prepare(tmp_path, "--train", str(bad), "--bpe", "none")
    assert code == 2
    assert f"{bad}, line 3: not valid UTF-8" in caplog.text


def test_empty_file_is_refused(tmp_path, caplog):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    code, _ = run_prepare(tmp_path, "--train", str(empty), "--bpe", "none")
    assert code == 2 and f"{empty} is empty" in caplog.text


@pytest.mark.parametrize("policy, expected", [("skip", 3), ("truncate", 4)])
def test_a_5000_token_line_is_counted_not_fatal(tmp_path, caplog, policy, expected):
    lines = ["a short one .", "another short one .", " ".join(["word"] * 5000), "last one ."]
    train = write(tmp_path / "train.txt", lines)
    with caplog.at_level("INFO"):
        code, destdir = run_prepare(tmp_path, "--train", train, "--bpe", "none", "--long-lines", policy)
    assert code == 0
    got = binarized_lines(destdir, "train")
    assert len(got) == expected
    counted = "1 longer than 250 tokens skipped" if policy == "skip" else "1 truncated"
    assert counted in caplog.text
    if policy == "truncate":
        assert max(len(line.split()) for line in got) == 250


# ------------------------------------------------------------------ translation data


@pytest.fixture(scope="module")
def language_pair(tmp_path_factory):
    from fairseq import options
    from fairseq_cli import preprocess

    work = tmp_path_factory.mktemp("pair")
    german = [f"das ist satz nummer {i}" for i in range(30)]
    english = [f"this is sentence number {i} indeed" for i in range(30)]
    for split in ("train", "valid"):
        write(work / f"{split}.de", german)
        write(work / f"{split}.en", english)
    destdir = str(work / "bin")
    preprocess.main(options.get_preprocessing_parser().parse_args([
        "-s", "de", "-t", "en", "--trainpref", str(work / "train"), "--validpref", str(work / "valid"),
        "--destdir", destdir, "--workers", "1",
    ]))
    return destdir


def pair_task(destdir, **options):
    return VRAELanguageModelingTask.setup_task(
        OmegaConf.structured(VRAELanguageModelingConfig(data=destdir, seed=1, dataset_impl=None, **options))
    )


@pytest.mark.parametrize("options, word", [({}, "sentence"), ({"side": "source"}, "satz"), ({"lang_pair": "de-en", "side": "source"}, "satz")])
def test_one_side_of_a_language_pair_is_read(language_pair, options, word):
    task = pair_task(language_pair, **options)
    task.load_dataset("train")
    first = task.dataset("train")[0]["target"]
    text = task.dictionary.string(first)
    assert word in text.split()
    assert len(task.dataset("train")) == 30


def test_training_on_the_target_side_of_translation_data(language_pair, tmp_path):
    records = helpers.run_train(helpers.vrae_train_args(language_pair, str(tmp_path / "ckpt"), ["--max-update", "2"]))
    assert [int(r["num_updates"]) for r in helpers.train_inner_records(records)] == [1, 2]


# ------------------------------------------------------------------ plain text in and out


def test_interactive_reads_and_writes_plain_text(tmp_path):
    raw = [
        "Hello, world! It's a test.",
        "Cats don't like water.",
        "The committee's decision (final) was announced.",
        "Prices rose by 5% today.",
    ]
    train = write(tmp_path / "train.txt", raw * 5)
    code, destdir = run_prepare(tmp_path, "--train", train, "--valid", train, "--bpe-merges", "40")
    assert code == 0
    save_dir = str(tmp_path / "ckpt")
    helpers.run_train(helpers.vrae_train_args(destdir, save_dir, [
        "--embed-dim", "32", "--encoder-hidden-size", "64", "--decoder-hidden-size", "64",
        "--latent-dim", "16", "--dropout", "0", "--kl-schedule", "constant", "--kl-weight", "0",
        "--max-tokens", "2000", "--max-update", "150", "--lr", "0.01", "--disable-validation",
        "--save-interval", "1000",
        "--no-save-optimizer-state",
    ]))
    interactive = shutil.which("fairseq-interactive", path=os.path.dirname(sys.executable))
    done = subprocess.run(
        [interactive, destdir, "--user-dir", helpers.USER_DIR, "--task", "vrae_lm", "--cpu", "--beam", "1",
         "--path", os.path.join(save_dir, "checkpoint_last.pt"),
         # the flags prepare_text printed and saved for this data
         *json.load(open(os.path.join(destdir, "prepare.json")))["generation_flags"].split()],
        input="\n".join(raw) + "\n", capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sources = [l.split("\t")[1] for l in done.stdout.splitlines() if l.startswith("S-")]
    detok = [l.split("\t")[2] for l in done.stdout.splitlines() if l.startswith("D-")]
    assert any("@@" in s for s in sources)  # the input went through BPE
    assert sum(d == r for d, r in zip(detok, raw)) >= 3  # and comes back as plain text
