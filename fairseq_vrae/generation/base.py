"""What every generation mode provides, and the registry of modes."""

import importlib
import logging
import os
from typing import Dict, List, Optional, Type

import numpy as np
from fairseq.data import LanguagePairDataset
from torch import Tensor

logger = logging.getLogger(__name__)

#: --latent-mode name -> mode class, in registration order
GENERATION_MODES: Dict[str, Type["GenerationMode"]] = {}


def register_generation_mode(name: str, registry: Optional[Dict[str, type]] = None):
    """Register a mode class under ``--latent-mode name``, in ``registry`` (default: the
    modes of ``vrae_lm``; ``latent_translation`` has its own, in ``generation/translation``)."""
    registry = GENERATION_MODES if registry is None else registry

    def register(cls):
        if name in registry:
            raise ValueError(f"generation mode {name!r} registered twice")
        cls.name = name
        registry[name] = cls
        return cls

    return register


class ModeOptions:
    """A task's configuration seen through per-call choices: ``overrides`` first, then
    the task's ``cfg``.  The hub interface hands a mode its options this way, so the
    task's configuration is never edited."""

    def __init__(self, cfg, overrides: Optional[Dict] = None):
        self.__dict__["_cfg"] = cfg
        self.__dict__["_overrides"] = dict(overrides or {})

    def __getattr__(self, name):
        # only for names not found on the instance; object.__getattribute__ keeps a
        # half-made instance (copy, pickle) from recursing here
        try:
            overrides = object.__getattribute__(self, "_overrides")
            cfg = object.__getattribute__(self, "_cfg")
        except AttributeError:
            raise AttributeError(name) from None
        if name in overrides:
            return overrides[name]
        return getattr(cfg, name)

    def __setattr__(self, name, value):
        raise AttributeError("a mode's options are read-only; pass them when the mode is made")


#: fairseq's --max-len-a/--max-len-b defaults: a cap of 200 tokens whatever the input
FAIRSEQ_LENGTH_DEFAULTS = (0, 200)


def default_length_bound(args, max_len_a: float, max_len_b: int) -> None:
    """Bound the output at ``max_len_a * x + max_len_b`` tokens (x: the length of what
    is decoded from, the longest of its batch) unless --max-len-a/--max-len-b were set."""
    if (getattr(args, "max_len_a", 0), getattr(args, "max_len_b", 200)) == FAIRSEQ_LENGTH_DEFAULTS:
        args.max_len_a, args.max_len_b = max_len_a, max_len_b


class InputError(ValueError):
    """An input the mode cannot take; interactive use skips it with this message."""


class ListWithSizes(list):
    """A list of token tensors that also answers ``sizes`` like an indexed dataset."""

    def __init__(self, tokens, lengths):
        super().__init__(tokens)
        self.sizes = np.asarray(lengths, dtype=np.int64)


def import_mode_files(package: str, folder: str) -> None:
    """Import every module of a package of modes (each registers itself), base.py aside."""
    for file in sorted(os.listdir(folder)):
        if file.endswith(".py") and not file.startswith("_") and file != "base.py":
            importlib.import_module(f"{package}.{file[:-3]}")


class Mode:
    """What every mode of both tasks has: its task, its options (``self.cfg``: the
    task's ``cfg`` with ``options`` given here in their place) and its default bound on
    the output's length."""

    name = ""
    #: (--max-len-a, --max-len-b) unless given: at most 1.2 x the input's length + 10
    #: tokens, so that a decoder caught in a loop stops near the length it decodes from
    length_bound = (1.2, 10)

    def __init__(self, task, **options):
        self.task = task
        self.cfg = ModeOptions(task.cfg, options)

    def generation_args(self, args) -> None:
        """Adjust fairseq's generation options before the generator is built."""
        default_length_bound(args, *self.length_bound)


class GenerationMode(Mode):
    """Reconstruction-style behaviour; modes override what differs.

    ``task`` is the hosting ``vrae_lm`` task; its ``dictionary`` is the vocabulary.
    """

    #: False for modes that need no sentences (prior samples)
    uses_data = True

    def __init__(self, task, **options):
        super().__init__(task, **options)
        self.dictionary = task.dictionary

    # ------------------------------------------------------------------ inputs

    def dataset(self, sentences):
        """What fairseq-generate iterates for a binarized split of sentences."""
        return self.sentence_pairs(sentences, sentences)

    def sentence_pairs(self, source, target):
        return LanguagePairDataset(
            source,
            source.sizes,
            self.dictionary,
            tgt=target,
            tgt_sizes=target.sizes,
            tgt_dict=self.dictionary,
            left_pad_source=False,
            left_pad_target=False,
        )

    def inference_dataset(self, src_tokens: List[Tensor], src_lengths: List[int]):
        """Inputs from fairseq-interactive or the hub interface."""
        return LanguagePairDataset(src_tokens, src_lengths, self.dictionary, left_pad_source=False)

    def encode_line(self, line: str, encode_fn) -> Tensor:
        """One interactive input line -> token ids; :class:`InputError` if unusable."""
        return self.encode_sentence(line, encode_fn)

    def encode_sentence(self, text: str, encode_fn) -> Tensor:
        if not text.strip():
            raise InputError("empty sentence")
        tokens = self.dictionary.encode_line(encode_fn(text), add_if_not_exist=False).long()
        self.check_length(tokens)
        return tokens

    def check_length(self, tokens: Tensor) -> None:
        limit = self.cfg.max_sentence_length
        if tokens.numel() > limit:
            raise InputError(
                f"{tokens.numel()} tokens with </s>, more than --max-sentence-length {limit} "
                f"(raise it to decode longer sentences)"
            )

    def input_sizes(self, dataset) -> Optional[np.ndarray]:
        """Length of each input for the length filter, None when there is nothing to filter."""
        sizes = getattr(dataset, "src_sizes", None)
        return None if sizes is None else np.asarray(sizes)

    # ------------------------------------------------------------------ decoding

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        net_input = dict(sample["net_input"], sample_posterior=False)
        return generator.generate(models, dict(sample, net_input=net_input), prefix_tokens=prefix_tokens, constraints=constraints)

    def decode_latent(self, generator, models, sample, latent: Tensor, prefix_tokens: Optional[Tensor] = None):
        """Decode the given codes, one per row of ``sample`` (each forced to begin with its
        row of ``prefix_tokens`` when given)."""
        extra = ("other_tokens", "prior_sample_ids", "sample_posterior")
        net_input = {k: v for k, v in sample["net_input"].items() if k not in extra}
        net_input["latent"] = latent.to(next(models[0].parameters()).dtype)
        return generator.generate(models, dict(sample, net_input=net_input), prefix_tokens=prefix_tokens)
