"""Bad input to the vrae_lm task: empty lines, long sentences, mismatched dictionaries."""

import os

import pytest
import torch
from fairseq import tasks
from omegaconf import OmegaConf

import fairseq_vrae  # noqa: F401
from fairseq_vrae.tasks.vrae_lm import RandomBatchesDataset, VRAELanguageModelingConfig, VRAELanguageModelingTask

import helpers


def make_task(data, **overrides):
    cfg = OmegaConf.structured(VRAELanguageModelingConfig(data=data, seed=1, dataset_impl=None, train_subset="train", **overrides))
    return VRAELanguageModelingTask.setup_task(cfg)


def batches(task, split="train", max_tokens=1000):
    iterator = task.get_batch_iterator(
        task.dataset(split), max_tokens=max_tokens, max_positions=task.max_positions()
    ).next_epoch_itr(shuffle=False)
    return list(iterator)


@pytest.fixture()
def corpus(tmp_path):
    long = " ".join(["the"] * 40)
    sentences = ["the cat sat", "", "a dog ran on the mat", "", "", long, "big red tree", long]
    return helpers.binarize(str(tmp_path), {"train": sentences})


def test_empty_and_long_sentences_are_skipped_and_counted(corpus, caplog):
    task = make_task(corpus, max_sentence_length=20)
    with caplog.at_level("INFO"):
        task.load_dataset("train")
    assert "8 sentences; 3 empty skipped; 2 longer than 20 tokens skipped" in caplog.text
    seen = [s for batch in batches(task) for s in batch["net_input"]["src_lengths"].tolist()]
    assert sorted(seen) == [4, 4, 7]  # the three ordinary sentences, </s> included


def test_long_sentences_can_be_truncated_keeping_the_end_of_sentence(corpus, caplog):
    task = make_task(corpus, max_sentence_length=20, long_sentences="truncate")
    with caplog.at_level("INFO"):
        task.load_dataset("train")
    assert "2 longer than 20 tokens truncated" in caplog.text
    items = [b for batch in batches(task) for b in batch["target"]]
    lengths = sorted(int(t.ne(task.dictionary.pad()).sum()) for t in items)
    assert lengths == [4, 4, 7, 20, 20]
    for target in items:
        words = target[target.ne(task.dictionary.pad())]
        assert words[-1] == task.dictionary.eos() and (words[:-1] != task.dictionary.eos()).all()


def test_batches_feed_the_sentence_to_both_sides(corpus):
    task = make_task(corpus)
    task.load_dataset("train")
    batch = batches(task)[0]
    src, prev, target = (batch["net_input"]["src_tokens"], batch["net_input"]["prev_output_tokens"], batch["target"])
    eos = task.dictionary.eos()
    assert torch.equal(src, target)
    assert (prev[:, 0] == eos).all()
    row = 0
    n = int(batch["net_input"]["src_lengths"][row])
    assert torch.equal(prev[row, 1:n], target[row, : n - 1])


def test_data_binarized_with_a_bigger_dictionary_is_refused(tmp_path):
    data = helpers.binarize(str(tmp_path / "big"), {"train": helpers.random_sentences(30)})
    small_dict = tmp_path / "small_dict.txt"
    small_dict.write_text("the 5\ncat 3\n")
    other = tmp_path / "other"
    other.mkdir()
    for name in os.listdir(data):
        if name != "dict.txt":
            os.symlink(os.path.join(data, name), other / name)
    (other / "dict.txt").write_text(small_dict.read_text())
    task = make_task(str(other))
    with pytest.raises(ValueError, match=r"dictionary mismatch.*at least \d+ entries.*loaded has 6"):
        task.load_dataset("train")


def test_missing_dictionary_and_split_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="fairseq-preprocess"):
        make_task(str(tmp_path))
    (tmp_path / "dict.txt").write_text("the 1\n")
    task = make_task(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no binarized split 'test'"):
        task.load_dataset("test")


def test_task_is_registered_for_the_command_line():
    assert tasks.TASK_REGISTRY["vrae_lm"] is VRAELanguageModelingTask


def epoch_batches(task, epoch):
    iterator = task.get_batch_iterator(task.dataset("train"), max_sentences=4, seed=1, epoch=epoch)
    return [sorted(batch["id"].tolist()) for batch in iterator.next_epoch_itr(shuffle=False)]


def test_random_batch_order_mixes_lengths_draws_anew_each_epoch_and_again_on_resume(tmp_path):
    # 40 sentences of 40 different lengths: fairseq's batches are runs of similar length
    sentences = [" ".join(["w"] * n) for n in range(1, 41)]
    data = helpers.binarize(str(tmp_path), {"train": sentences, "valid": sentences})
    by_length = make_task(data)
    by_length.load_dataset("train")
    assert all(b == list(range(b[0], b[0] + len(b))) for b in epoch_batches(by_length, 1))

    task = make_task(data, batch_order="random")
    task.load_dataset("train")
    first, second = epoch_batches(task, 1), epoch_batches(task, 2)
    assert sorted(i for b in first for i in b) == list(range(40))  # every sentence, once
    assert any(b[-1] - b[0] > 10 for b in first)  # lengths mixed within a batch
    assert first != second  # drawn again each epoch
    resumed = make_task(data, batch_order="random")  # a restarted run, same seed, at epoch 2
    resumed.load_dataset("train")
    assert epoch_batches(resumed, 2) == second
    task.load_dataset("valid")  # evaluation keeps fairseq's order: less padding, the same sums
    assert not isinstance(task.dataset("valid"), RandomBatchesDataset)
