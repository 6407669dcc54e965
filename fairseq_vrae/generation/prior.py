"""Samples from the prior: ``--num-samples`` codes z ~ p(z), each fixed by (--seed, index)."""

import numpy as np
import torch
from fairseq.data import FairseqDataset

from ..models.latent import find_latent_layer
from ..vae_math import sentence_seeds
from .base import GenerationMode, register_generation_mode


class PriorSampleDataset(FairseqDataset):
    """``count`` empty inputs; the mode decodes z ~ p(z) fixed by (seed, id)."""

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


@register_generation_mode("prior")
class PriorSamples(GenerationMode):
    uses_data = False
    #: nothing to be relative to: at most 100 tokens unless --max-len-b says otherwise
    length_bound = (0, 100)

    def __init__(self, task, **options):
        super().__init__(task, **options)
        if self.cfg.num_samples <= 0:
            raise ValueError("--latent-mode prior needs --num-samples N (how many sentences to sample)")

    def dataset(self, sentences=None):
        return PriorSampleDataset(self.cfg.num_samples, self.dictionary)

    def inference_dataset(self, src_tokens, src_lengths):
        return self.dataset()

    def input_sizes(self, dataset):
        return None

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        ids = sample["net_input"]["prior_sample_ids"]
        seeds = sentence_seeds(self.cfg.seed, ids)
        codes = find_latent_layer(models[0]).sample_prior(seeds).to(ids.device)
        return self.decode_latent(generator, models, sample, codes)
