"""Imputation: remove the final ``--impute-fraction`` of each sentence's words and let
the model fill them in, decoding from the observed part's posterior mean."""

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset

from .base import GenerationMode, ListWithSizes, register_generation_mode


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


@register_generation_mode("impute")
class Imputation(GenerationMode):
    def dataset(self, sentences):
        observed = ObservedPrefixDataset(sentences, self.cfg.impute_fraction, self.dictionary.eos())
        return self.sentence_pairs(observed, sentences)

    def inference_dataset(self, src_tokens, src_lengths):
        return self.dataset(ListWithSizes(src_tokens, src_lengths))

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """The observed words are forced as the decoder's prefix; the rest is searched."""
        sample = dict(sample, net_input=dict(sample["net_input"], sample_posterior=False))
        observed = sample["net_input"]["src_tokens"]
        pad = self.dictionary.pad()
        prefix = observed.masked_fill(observed.eq(self.dictionary.eos()), pad)
        prefix = prefix[:, : max(1, int(prefix.ne(pad).sum(1).max()))]
        return generator.generate(models, sample, prefix_tokens=prefix)
