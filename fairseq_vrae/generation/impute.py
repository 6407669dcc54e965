"""Imputation: remove the final ``--impute-fraction`` of each sentence's words and let
the model fill them in, the observed words forced as the decoder's prefix.

Which code the completion is decoded from (``--impute-method``):

* ``prefix``: the posterior mean of the observed words read as a whole sentence
  (``w1 .. wk </s>``), which describes a short sentence;
* ``open-prefix``: the same words without ``</s>``, so the encoder reads an unfinished
  sentence;
* ``iterative``: start as ``prefix``, then re-encode each completed sentence and decode
  again from its posterior mean (``--impute-iterations`` decodes in all): z comes to
  describe a sentence of full length that begins with the observed words.
"""

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, data_utils

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

    def __init__(self, task, **options):
        super().__init__(task, **options)
        if getattr(self.cfg, "impute_iterations", 1) < 1:
            raise ValueError(f"--impute-iterations must be >= 1, got {self.cfg.impute_iterations}")

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """The observed words are forced as the decoder's prefix; the rest is searched."""
        observed = sample["net_input"]["src_tokens"]
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        prefix = observed.masked_fill(observed.eq(eos), pad)
        prefix = prefix[:, : max(1, int(prefix.ne(pad).sum(1).max()))]
        method = str(getattr(self.cfg, "impute_method", "prefix"))  # older checkpoints' configs lack it
        net_input = dict(sample["net_input"], sample_posterior=False)
        if method == "open-prefix":
            net_input["src_tokens"], net_input["src_lengths"] = prefix, prefix.ne(pad).sum(1)
        hypotheses = generator.generate(models, dict(sample, net_input=net_input), prefix_tokens=prefix)
        rounds = getattr(self.cfg, "impute_iterations", 1) if method == "iterative" else 1
        encoder = models[0].encoder
        for _ in range(rounds - 1):
            completed = data_utils.collate_tokens([hypos[0]["tokens"] for hypos in hypotheses], pad, eos)
            codes = encoder(completed, src_lengths=completed.ne(pad).sum(1), sample_posterior=False)["mu"]
            hypotheses = self.decode_latent(generator, models, sample, codes, prefix_tokens=prefix)
        return hypotheses
