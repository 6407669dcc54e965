"""The ``vrae_lm`` task: one sentence per example from ``fairseq-preprocess`` output."""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from fairseq import utils
from fairseq.data import BaseWrapperDataset, Dictionary, LanguagePairDataset, data_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.distributed import utils as distributed_utils
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

logger = logging.getLogger(__name__)

LONG_SENTENCE_POLICIES = ChoiceEnum(["skip", "truncate"])


@dataclass
class VRAELanguageModelingConfig(FairseqDataclass):
    data: Optional[str] = field(
        default=None,
        metadata={"help": "folder written by fairseq-preprocess --only-source (dict.txt, *.bin/.idx)"},
    )
    max_sentence_length: int = field(
        default=256,
        metadata={"help": "longest sentence in tokens, end-of-sentence included"},
    )
    long_sentences: LONG_SENTENCE_POLICIES = field(
        default="skip",
        metadata={"help": "what to do with longer sentences: skip them or truncate them"},
    )
    seed: int = II("common.seed")
    dataset_impl: Optional[str] = II("dataset.dataset_impl")


class TruncatedSentenceDataset(BaseWrapperDataset):
    """Cuts sentences to ``max_length`` tokens, keeping the final end-of-sentence."""

    def __init__(self, dataset, max_length: int):
        super().__init__(dataset)
        self.max_length = max_length
        self._sizes = np.minimum(dataset.sizes, max_length)

    def __getitem__(self, index):
        item = self.dataset[index]
        if len(item) > self.max_length:
            item = torch.cat([item[: self.max_length - 1], item[-1:]])
        return item

    @property
    def sizes(self):
        return self._sizes

    def size(self, index):
        return self._sizes[index]

    def num_tokens(self, index):
        return self._sizes[index]


def largest_token_id(dataset) -> int:
    """Largest token id stored in an indexed dataset (memory-mapped fast path)."""
    buffer, index = getattr(dataset, "_bin_buffer", None), getattr(dataset, "_index", None)
    if buffer is not None and index is not None and len(dataset) > 0:
        return int(np.frombuffer(buffer, dtype=index.dtype).max())
    return max((int(dataset[i].max()) for i in range(len(dataset)) if len(dataset[i])), default=-1)


@register_task("vrae_lm", dataclass=VRAELanguageModelingConfig)
class VRAELanguageModelingTask(FairseqTask):
    """Sentence-level modelling for the ``vrae`` model.

    Each example is one line of the binarized corpus.  The encoder reads
    ``w1 .. wn </s>``, the decoder is fed ``</s> w1 .. wn`` and predicts
    ``w1 .. wn </s>`` (fairseq's ``LanguagePairDataset`` with the same data on both
    sides, so no copy is made).  Empty lines are skipped; sentences longer than
    ``--max-sentence-length`` are skipped or truncated; both are counted in the log.
    """

    def __init__(self, cfg: VRAELanguageModelingConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        if cfg.max_sentence_length < 2:
            raise ValueError("--max-sentence-length must be at least 2 (a word and </s>)")

    @classmethod
    def setup_task(cls, cfg: VRAELanguageModelingConfig, **kwargs):
        if not cfg.data:
            raise ValueError("vrae_lm needs the data folder written by fairseq-preprocess")
        paths = utils.split_paths(cfg.data)
        dict_path = os.path.join(paths[0], "dict.txt")
        if not os.path.exists(dict_path):
            raise FileNotFoundError(
                f"no dictionary at {dict_path}; binarize the text with "
                f"fairseq-preprocess --only-source --destdir {paths[0]} ..."
            )
        dictionary = Dictionary.load(dict_path)
        logger.info(f"dictionary: {len(dictionary)} types")
        return cls(cfg, dictionary)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def max_positions(self):
        return (self.cfg.max_sentence_length, self.cfg.max_sentence_length)

    # ----------------------------------------------------------------------------------
    # data

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)]
        split_path = os.path.join(data_path, split)
        sentences = data_utils.load_indexed_dataset(
            split_path, self.dictionary, self.cfg.dataset_impl, combine=combine
        )
        if sentences is None:
            raise FileNotFoundError(f"no binarized split {split!r} at {split_path}.{{bin,idx}}")
        self.check_token_ids(sentences, split_path)
        self.dataset_for_split(split, sentences)

    def check_token_ids(self, sentences, where: str) -> None:
        largest = largest_token_id(sentences)
        if largest >= len(self.dictionary):
            raise ValueError(
                f"dictionary mismatch: {where} holds token id {largest}, so it was binarized "
                f"with a dictionary of at least {largest + 1} entries, but the dictionary "
                f"loaded has {len(self.dictionary)}; use the dict.txt written with the data"
            )

    def dataset_for_split(self, split: str, sentences) -> LanguagePairDataset:
        sizes = np.asarray(sentences.sizes)
        empty = int((sizes <= 1).sum())
        long = int((sizes > self.cfg.max_sentence_length).sum())
        if self.cfg.long_sentences == "truncate" and long:
            sentences = TruncatedSentenceDataset(sentences, self.cfg.max_sentence_length)
        logger.info(
            f"{split}: {len(sizes)} sentences; {empty} empty skipped; {long} longer than "
            f"{self.cfg.max_sentence_length} tokens "
            f"{'truncated' if self.cfg.long_sentences == 'truncate' else 'skipped'}"
        )
        dataset = self.sentence_pairs(sentences)
        self.datasets[split] = dataset
        return dataset

    def sentence_pairs(self, sentences) -> LanguagePairDataset:
        return LanguagePairDataset(
            sentences,
            sentences.sizes,
            self.dictionary,
            tgt=sentences,
            tgt_sizes=sentences.sizes,
            tgt_dict=self.dictionary,
            left_pad_source=False,
            left_pad_target=False,
        )

    def filter_indices_by_size(
        self, indices, dataset, max_positions=None, ignore_invalid_inputs=False
    ):
        """Drop empty sentences and (under ``--long-sentences skip``) long ones.

        Counts were logged when the split was loaded; this never raises for length.
        """
        sizes = np.asarray(dataset.src_sizes)[indices]
        keep = (sizes > 1) & (sizes <= self.cfg.max_sentence_length)
        return indices[keep]

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        return LanguagePairDataset(
            src_tokens, src_lengths, self.dictionary, left_pad_source=False
        )

    # ----------------------------------------------------------------------------------
    # training

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if hasattr(criterion, "set_num_updates"):
            criterion.set_num_updates(update_num)
        decorrelate_workers()
        return super().train_step(
            sample, model, criterion, optimizer, update_num, ignore_grad=ignore_grad
        )


def decorrelate_workers() -> None:
    """Give each data-parallel worker its own noise (posterior samples, word dropout).

    fairseq seeds every worker with ``seed + num_updates``, which would draw the same
    epsilon on every GPU.  A draw from that shared state, offset by the rank, keeps
    runs reproducible and resumable while making the workers' streams differ.  A
    single worker is left untouched.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world_size = distributed_utils.get_data_parallel_world_size()
    if world_size <= 1:
        return
    rank = distributed_utils.get_data_parallel_rank()
    shared = int(torch.randint(0, 2**31 - 1, (1,)).item())
    utils.set_torch_seed((shared * world_size + rank) % (2**31 - 1))
