"""Datasets that turn a split (or nothing) into latent-sampling generation inputs.

Each yields batches in the format fairseq's generate/interactive loops expect
(``id``, ``net_input.src_tokens``, ``target``); the extra ``net_input`` keys tell the
``vrae_lm`` task which latent code to decode.
"""

import logging

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FairseqDataset, data_utils

logger = logging.getLogger(__name__)


class PriorSampleDataset(FairseqDataset):
    """``count`` empty inputs; the task decodes z ~ N(0, I) fixed by (seed, id)."""

    def __init__(self, count: int, dictionary):
        self.count = count
        self.dictionary = dictionary
        self.sizes = np.ones(count, dtype=np.int64)

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return {"id": index}

    def collater(self, samples):
        if not samples:
            return {}
        ids = torch.tensor([s["id"] for s in samples], dtype=torch.long)
        return {
            "id": ids,
            "nsentences": len(samples),
            "ntokens": 0,
            "net_input": {
                "src_tokens": torch.full((len(samples), 1), self.dictionary.eos(), dtype=torch.long),
                "src_lengths": torch.ones(len(samples), dtype=torch.long),
                "prior_sample_ids": ids,
            },
            "target": None,
        }

    def num_tokens(self, index):
        return 1

    def size(self, index):
        return 1

    def ordered_indices(self):
        return np.arange(self.count)


class SentencePairDataset(FairseqDataset):
    """Consecutive sentences (0, 1), (2, 3), ... as interpolation end points.

    ``src_tokens`` is the first sentence, ``target`` the second (so generate prints
    them as the S- and T- lines), ``other_tokens`` the second again for the encoder.
    An unpaired last sentence is skipped with a warning.
    """

    def __init__(self, sentences, dictionary):
        self.sentences = sentences
        self.dictionary = dictionary
        if len(sentences) % 2:
            logger.warning(
                f"interpolation pairs consecutive sentences: the last of {len(sentences)} "
                f"has no partner and is skipped"
            )
        self.pairs = len(sentences) // 2
        sizes = np.asarray([len(sentences[i]) for i in range(2 * self.pairs)], dtype=np.int64)
        self.sizes = np.maximum(sizes[0::2], sizes[1::2]) if self.pairs else np.zeros(0, np.int64)

    def __len__(self):
        return self.pairs

    def __getitem__(self, index):
        return {"id": index, "first": self.sentences[2 * index], "second": self.sentences[2 * index + 1]}

    def collater(self, samples):
        if not samples:
            return {}
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        first = data_utils.collate_tokens([s["first"] for s in samples], pad, eos)
        second = data_utils.collate_tokens([s["second"] for s in samples], pad, eos)
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": int(second.ne(pad).sum()),
            "net_input": {
                "src_tokens": first,
                "src_lengths": first.ne(pad).sum(1),
                "other_tokens": second,
            },
            "target": second,
        }

    def num_tokens(self, index):
        return int(self.sizes[index])

    def size(self, index):
        return int(self.sizes[index])

    def ordered_indices(self):
        return np.arange(self.pairs)


class ObservedPrefixDataset(BaseWrapperDataset):
    """Each sentence without its final ``fraction`` of words (at least one removed when
    it has two or more), ``</s>`` kept: the observed part for imputation."""

    def __init__(self, dataset, fraction: float, eos: int):
        super().__init__(dataset)
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"--impute-fraction must be in (0, 1), got {fraction}")
        self.eos = eos
        words = np.asarray(dataset.sizes) - 1
        removed = np.where(words > 1, np.maximum(1, np.round(fraction * words)), 0).astype(np.int64)
        self.observed_words = words - removed
        self._sizes = self.observed_words + 1

    def __getitem__(self, index):
        item = self.dataset[index]
        keep = int(self.observed_words[index])
        return torch.cat([item[:keep], item.new_tensor([self.eos])])

    @property
    def sizes(self):
        return self._sizes

    def size(self, index):
        return int(self._sizes[index])

    def num_tokens(self, index):
        return int(self._sizes[index])
