"""Homotopies: decode evenly spaced points between the posterior means of two sentences."""

import logging

import numpy as np
import torch
from fairseq.data import FairseqDataset, LanguagePairDataset, data_utils

from ..vae_math import interpolate_latents
from .base import GenerationMode, InputError, register_generation_mode

logger = logging.getLogger(__name__)


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


@register_generation_mode("interpolate")
class Interpolation(GenerationMode):
    """K+2 hypotheses per pair: both posterior means and ``--interpolation-steps`` K
    evenly spaced points between them (``--interpolation linear|spherical``).

    Interactive input is one line per pair, the two sentences separated by a tab; it
    reaches the model as one row ``A </s> B </s>`` (fairseq-interactive passes nothing
    but ``src_tokens``).
    """

    def __init__(self, task, **options):
        super().__init__(task, **options)
        if self.cfg.interpolation_steps < 0:
            raise ValueError("--interpolation-steps must be >= 0")

    @property
    def points(self) -> int:
        return self.cfg.interpolation_steps + 2

    def dataset(self, sentences):
        return SentencePairDataset(sentences, self.dictionary)

    def encode_line(self, line, encode_fn):
        parts = line.split("\t")
        if len(parts) != 2:
            raise InputError("interpolate mode needs two sentences separated by a tab")
        return torch.cat([self.encode_sentence(part, encode_fn) for part in parts])

    def split_pair(self, row):
        """``A </s> B </s>`` (padding removed) -> (A </s>, B </s>)."""
        row = row[row.ne(self.dictionary.pad())]
        ends = row.eq(self.dictionary.eos()).nonzero().view(-1)
        if len(ends) < 2 or ends[-1] != len(row) - 1:
            raise InputError("interpolate mode needs two sentences, each ending with </s>")
        cut = int(ends[0]) + 1
        return row[:cut], row[cut:]

    def inference_dataset(self, src_tokens, src_lengths):
        sides = [self.split_pair(tokens) for tokens in src_tokens]
        for first, second in sides:  # each end point on its own, as a sentence
            self.check_length(first)
            self.check_length(second)
        longest = [max(len(first), len(second)) for first, second in sides]
        return LanguagePairDataset(src_tokens, longest, self.dictionary, left_pad_source=False)

    def input_sizes(self, dataset):
        if isinstance(dataset, SentencePairDataset):
            return None  # pairs of a split: nothing to drop
        return super().input_sizes(dataset)

    def generation_args(self, args):
        super().generation_args(args)
        # one hypothesis per point; let the stock commands print all of them
        if getattr(args, "nbest", 1) < self.points:
            args.nbest = self.points

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        net_input = sample["net_input"]
        first, second = net_input["src_tokens"], net_input.get("other_tokens")
        if second is None:
            pairs = [self.split_pair(row) for row in first]
            pad, eos = self.dictionary.pad(), self.dictionary.eos()
            first = data_utils.collate_tokens([a for a, _ in pairs], pad, eos)
            second = data_utils.collate_tokens([b for _, b in pairs], pad, eos)
        encoder = models[0].encoder
        start = encoder(first, sample_posterior=False)["mu"]
        end = encoder(second, sample_posterior=False)["mu"]
        points = self.points
        weights = torch.linspace(0.0, 1.0, points, device=start.device)
        pairs = start.size(0)
        # (pair, point) flattened pair-major
        codes = interpolate_latents(
            start.repeat_interleave(points, 0),
            end.repeat_interleave(points, 0),
            weights.repeat(pairs),
            self.cfg.interpolation,
        )
        # the length bound is relative to the longer end of each path
        longer = first if first.size(1) >= second.size(1) else second
        expanded = {
            "net_input": {
                "src_tokens": longer.repeat_interleave(points, 0),
                "src_lengths": longer.ne(self.dictionary.pad()).sum(1).repeat_interleave(points, 0),
            },
        }
        hypos = self.decode_latent(generator, models, expanded, codes)
        return [[hypos[p * points + j][0] for j in range(points)] for p in range(pairs)]
