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
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..criterions.vrae_elbo import LatentEvaluationConfig
from ..generation_datasets import ObservedPrefixDataset, PriorSampleDataset, SentencePairDataset
from ..models.latent import find_latent_layer
from ..vae_math import interpolate_latents

logger = logging.getLogger(__name__)

LONG_SENTENCE_POLICIES = ChoiceEnum(["skip", "truncate"])
SIDES = ChoiceEnum(["source", "target"])
LATENT_MODES = ChoiceEnum(["posterior-mean", "posterior-sample", "prior", "interpolate", "impute"])
INTERPOLATIONS = ChoiceEnum(["linear", "spherical"])


@dataclass
class VRAELanguageModelingConfig(FairseqDataclass):
    data: Optional[str] = field(
        default=None,
        metadata={"help": "folder written by fairseq-preprocess --only-source (dict.txt, *.bin/.idx)"},
    )
    lang_pair: Optional[str] = field(
        default=None,
        metadata={"help": "bilingual data (fairseq-preprocess -s X -t Y): the pair as X-Y "
                  "(inferred from the file names when the folder has no dict.txt)"},
    )
    side: SIDES = field(
        default="target", metadata={"help": "bilingual data: which side of the pair to model"}
    )
    max_sentence_length: int = field(
        default=256,
        metadata={"help": "longest sentence in tokens, end-of-sentence included"},
    )
    long_sentences: LONG_SENTENCE_POLICIES = field(
        default="skip",
        metadata={"help": "what to do with longer sentences: skip them or truncate them"},
    )
    latent_mode: LATENT_MODES = field(
        default="posterior-mean",
        metadata={
            "help": "generation: decode each sentence's posterior mean (reconstruction) or a "
            "posterior sample, samples from the prior, interpolations between consecutive "
            "sentences, or completions of sentences whose end is removed"
        },
    )
    num_samples: int = field(
        default=0, metadata={"help": "--latent-mode prior: how many sentences to sample"}
    )
    interpolation_steps: int = field(
        default=5,
        metadata={"help": "--latent-mode interpolate: points strictly between the two codes"},
    )
    interpolation: INTERPOLATIONS = field(
        default="linear", metadata={"help": "--latent-mode interpolate: path between the codes"}
    )
    impute_fraction: float = field(
        default=0.2,
        metadata={"help": "--latent-mode impute: final fraction of each sentence to fill in"},
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
        if cfg.latent_mode == "prior" and cfg.num_samples <= 0:
            raise ValueError("--latent-mode prior needs --num-samples N (how many sentences to sample)")
        if cfg.latent_mode == "interpolate" and cfg.interpolation_steps < 0:
            raise ValueError("--interpolation-steps must be >= 0")

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # vrae_elbo's evaluation options, so that fairseq-validate takes --iw-samples
        # without --criterion (it rebuilds the checkpoint's criterion with the value)
        gen_parser_from_dataclass(parser, LatentEvaluationConfig())

    @classmethod
    def setup_task(cls, cfg: VRAELanguageModelingConfig, **kwargs):
        if not cfg.data:
            raise ValueError("vrae_lm needs the data folder written by fairseq-preprocess")
        paths = utils.split_paths(cfg.data)
        dict_path = os.path.join(paths[0], "dict.txt")
        if cfg.lang_pair is None and not os.path.exists(dict_path):
            source, target = data_utils.infer_language_pair(paths[0])
            if source is not None:
                cfg.lang_pair = f"{source}-{target}"
        if cfg.lang_pair is not None:
            if len(cfg.lang_pair.split("-")) != 2:
                raise ValueError(f"--lang-pair must look like de-en, got {cfg.lang_pair!r}")
            dict_path = os.path.join(paths[0], f"dict.{cls.side_language(cfg)}.txt")
        if not os.path.exists(dict_path):
            raise FileNotFoundError(
                f"no dictionary at {dict_path}; binarize the text with "
                f"fairseq-preprocess --only-source --destdir {paths[0]} ... (or, for a "
                f"language pair, give --lang-pair X-Y)"
            )
        dictionary = Dictionary.load(dict_path)
        logger.info(f"dictionary {dict_path}: {len(dictionary)} types")
        return cls(cfg, dictionary)

    @staticmethod
    def side_language(cfg) -> str:
        source, target = cfg.lang_pair.split("-")
        return target if cfg.side == "target" else source

    def split_prefix(self, split: str) -> str:
        """``train`` for monolingual data, ``train.de-en.en`` for one side of a pair."""
        if self.cfg.lang_pair is None:
            return split
        return f"{split}.{self.cfg.lang_pair}.{self.side_language(self.cfg)}"

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
        if self.cfg.latent_mode == "prior":
            self.datasets[split] = PriorSampleDataset(self.cfg.num_samples, self.dictionary)
            return
        paths = utils.split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)]
        split_path = os.path.join(data_path, self.split_prefix(split))
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
        dataset = self.dataset_for_mode(sentences)
        self.datasets[split] = dataset
        return dataset

    def dataset_for_mode(self, sentences):
        """Training/reconstruction pairs, or the inputs the generation mode needs."""
        mode = self.cfg.latent_mode
        if mode == "prior":
            return PriorSampleDataset(self.cfg.num_samples, self.dictionary)
        if mode == "interpolate":
            return SentencePairDataset(sentences, self.dictionary)
        source = sentences
        if mode == "impute":
            source = ObservedPrefixDataset(sentences, self.cfg.impute_fraction, self.dictionary.eos())
        return LanguagePairDataset(
            source,
            source.sizes,
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
        sizes = getattr(dataset, "src_sizes", None)
        if sizes is None:  # prior samples and interpolation pairs: nothing to drop
            return indices
        sizes = np.asarray(sizes)[indices]
        keep = (sizes > 1) & (sizes <= self.cfg.max_sentence_length)
        return indices[keep]

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        """Inputs from fairseq-interactive or the hub interface, for the current mode.

        In interpolate mode each input holds both end points, ``A </s> B </s>``
        (fairseq-interactive passes the model nothing but ``src_tokens``).
        """
        if self.cfg.latent_mode in ("prior", "impute"):
            return self.dataset_for_mode(ListWithSizes(src_tokens, src_lengths))
        return LanguagePairDataset(src_tokens, src_lengths, self.dictionary, left_pad_source=False)

    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        """Input lines -> token ids; empty lines are skipped with a message.

        In interpolate mode each line holds two sentences separated by a tab.
        """
        tokens = []
        for number, line in enumerate(lines):
            interpolate = self.cfg.latent_mode == "interpolate"
            parts = line.split("\t") if interpolate else [line]
            if interpolate and len(parts) != 2:
                logger.warning(f"skipping input {number}: interpolate mode needs two sentences separated by a tab")
                continue
            if any(not part.strip() for part in parts):
                logger.warning(f"skipping input {number}: empty sentence")
                continue
            tokens.append(
                torch.cat([
                    self.dictionary.encode_line(encode_fn(part), add_if_not_exist=False).long()
                    for part in parts
                ])
            )
        return tokens, [t.numel() for t in tokens]

    # ----------------------------------------------------------------------------------
    # models and generation

    def build_model(self, cfg, from_checkpoint=False):
        name = getattr(cfg, "_name", None) or getattr(cfg, "arch", None)
        model_class = ARCH_MODEL_REGISTRY.get(name) or MODEL_REGISTRY.get(name)
        from ..models.vrae import VRAEModel

        if model_class is not None and not issubclass(model_class, VRAEModel):
            raise ValueError(
                f"the vrae_lm task needs a vrae model, but this checkpoint/configuration holds "
                f"a {name!r} model ({model_class.__name__})"
            )
        return super().build_model(cfg, from_checkpoint)

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        if self.cfg.latent_mode == "interpolate":
            # one hypothesis per point; let the stock commands print all of them
            points = self.cfg.interpolation_steps + 2
            if getattr(args, "nbest", 1) < points:
                args.nbest = points
        return super().build_generator(
            models, args, seq_gen_cls=seq_gen_cls, extra_gen_cls_kwargs=extra_gen_cls_kwargs, **kwargs
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Decode the latent code the mode asks for, with any fairseq search."""
        mode = self.cfg.latent_mode
        sample = dict(sample, net_input=dict(sample["net_input"], sample_posterior=mode == "posterior-sample"))
        with torch.no_grad():
            if mode == "prior":
                return self._decode_latent(generator, models, sample, self._prior_codes(models, sample))
            if mode == "interpolate":
                return self._interpolate(generator, models, sample)
            if mode == "impute":
                observed = sample["net_input"]["src_tokens"]
                prefix = observed.masked_fill(observed.eq(self.dictionary.eos()), self.dictionary.pad())
                prefix = prefix[:, : max(1, int(prefix.ne(self.dictionary.pad()).sum(1).max()))]
                return generator.generate(models, sample, prefix_tokens=prefix)
            return generator.generate(models, sample, prefix_tokens=prefix_tokens, constraints=constraints)

    def _prior_codes(self, models, sample):
        ids = sample["net_input"]["prior_sample_ids"]
        latent = find_latent_layer(models[0])
        return latent.sample_prior(self.cfg.seed * 1_000_003 + ids.cpu()).to(ids.device)

    def _decode_latent(self, generator, models, sample, latent):
        net_input = {
            k: v for k, v in sample["net_input"].items() if k not in ("other_tokens", "prior_sample_ids", "sample_posterior")
        }
        net_input["latent"] = latent.to(next(models[0].parameters()).dtype)
        return generator.generate(models, dict(sample, net_input=net_input))

    def _split_pairs(self, tokens):
        """``A </s> B </s>`` rows -> right-padded A and B batches."""
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        firsts, seconds = [], []
        for row in tokens:
            row = row[row.ne(pad)]
            cut = int(row.eq(eos).nonzero()[0]) + 1
            firsts.append(row[:cut])
            seconds.append(row[cut:] if cut < len(row) else row.new_tensor([eos]))
        return (
            data_utils.collate_tokens(firsts, pad, eos),
            data_utils.collate_tokens(seconds, pad, eos),
        )

    def _interpolate(self, generator, models, sample):
        """K+2 hypotheses per pair: both posterior means and K evenly spaced points between."""
        net_input = sample["net_input"]
        first, second = net_input["src_tokens"], net_input.get("other_tokens")
        if second is None:
            first, second = self._split_pairs(first)
        encoder = models[0].encoder
        start = encoder(first, sample_posterior=False)["mu"]
        end = encoder(second, sample_posterior=False)["mu"]
        points = self.cfg.interpolation_steps + 2
        weights = torch.linspace(0.0, 1.0, points, device=start.device)
        pairs = start.size(0)
        # (pair, point) flattened pair-major
        codes = interpolate_latents(
            start.repeat_interleave(points, 0),
            end.repeat_interleave(points, 0),
            weights.repeat(pairs),
            self.cfg.interpolation,
        )
        expanded = {
            "net_input": {
                "src_tokens": net_input["src_tokens"].repeat_interleave(points, 0),
                "src_lengths": net_input["src_lengths"].repeat_interleave(points, 0),
            },
        }
        hypos = self._decode_latent(generator, models, expanded, codes)
        return [[hypos[p * points + j][0] for j in range(points)] for p in range(pairs)]

class ListWithSizes(list):
    """A list of token tensors that also answers ``sizes`` like an indexed dataset."""

    def __init__(self, tokens, lengths):
        super().__init__(tokens)
        self.sizes = np.asarray(lengths, dtype=np.int64)
