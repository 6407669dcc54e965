"""The ``vrae_lm`` task: one sentence per example from ``fairseq-preprocess`` output."""

import contextlib
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

from ..evaluation import LatentEvaluationConfig
from ..generation import GENERATION_MODES, GenerationMode, InputError
from ..inputs import skip_input
from ..models.warm_start import forget_pretrained_paths

logger = logging.getLogger(__name__)

LONG_SENTENCE_POLICIES = ChoiceEnum(["skip", "truncate"])
SIDES = ChoiceEnum(["source", "target"])
LATENT_MODES = ChoiceEnum(list(GENERATION_MODES))
INTERPOLATIONS = ChoiceEnum(["linear", "spherical"])
IMPUTE_METHODS = ChoiceEnum(["prefix", "open-prefix", "iterative"])
BATCH_ORDERS = ChoiceEnum(["length", "random"])


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
    impute_method: IMPUTE_METHODS = field(
        default="prefix",
        metadata={"help": "--latent-mode impute: z from the posterior of the observed words read as "
                  "a sentence (prefix); read without </s>, as an unfinished one (open-prefix); or "
                  "re-encoded from each completion for --impute-iterations rounds (iterative)"},
    )
    impute_iterations: int = field(
        default=3,
        metadata={"help": "--impute-method iterative: decode, re-encode the completed sentence, "
                  "decode again from its posterior mean, this many times in all"},
    )
    batch_order: BATCH_ORDERS = field(
        default="length",
        metadata={"help": "length: fairseq's batches of sentences of similar length; random: batches "
                  "drawn at random, again each epoch (as a shuffling DataLoader makes them); "
                  "for the training split only"},
    )
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")
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


class RandomBatchesDataset(BaseWrapperDataset):
    """Batches of sentences drawn at random, a new draw each epoch, instead of fairseq's
    batches of similar lengths: the order fairseq batches by is a permutation of the
    sentences fixed by (``seed``, epoch), so a resumed run draws the same batches."""

    def __init__(self, dataset, seed: int):
        super().__init__(dataset)
        self.seed, self.epoch = seed, 1

    @property
    def src_sizes(self):  # the task's length filter reads them
        return self.dataset.src_sizes

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # fairseq asks for the order again each epoch

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.epoch = epoch

    def ordered_indices(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self)).astype(np.int64)


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
        self._mode = GENERATION_MODES[cfg.latent_mode](self)  # a mode checks its options when it is made
        self._mode_for_call = None  # a mode the hub interface passes for one call
        self.skipped_inputs = 0

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

    def generation_mode(self) -> GenerationMode:
        """The ``--latent-mode`` in force: the one passed to :meth:`using_generation_mode`
        (the hub interface's, for one call), else the task's own (made once, again only
        if ``cfg.latent_mode`` was changed)."""
        if self._mode_for_call is not None:
            return self._mode_for_call
        if self._mode.name != self.cfg.latent_mode:
            self._mode = GENERATION_MODES[self.cfg.latent_mode](self)
        return self._mode

    @contextlib.contextmanager
    def using_generation_mode(self, name: str, **options):
        """Generate with mode ``name`` and these of its options (``num_samples=4``, ...)
        in place of the task's, inside the ``with`` block; the task's configuration is
        left as it is."""
        previous = self._mode_for_call
        self._mode_for_call = GENERATION_MODES[name](self, **options)
        try:
            yield self._mode_for_call
        finally:
            self._mode_for_call = previous

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        mode = self.generation_mode()
        if not mode.uses_data:
            self.datasets[split] = mode.dataset(None)
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
        dataset = self.generation_mode().dataset(sentences)
        if getattr(self.cfg, "batch_order", "length") == "random" and split == getattr(self.cfg, "train_subset", "train"):
            dataset = RandomBatchesDataset(dataset, self.cfg.seed)
        self.datasets[split] = dataset
        return dataset

    def filter_indices_by_size(
        self, indices, dataset, max_positions=None, ignore_invalid_inputs=False
    ):
        """Drop empty sentences and (under ``--long-sentences skip``) long ones.

        For a split, the counts were logged when it was loaded.  For inputs from
        fairseq-interactive or the hub interface, a sentence over
        ``--max-sentence-length`` is an error (a logged, counted skip with
        ``--skip-invalid-size-inputs-valid-test``), never a silently missing output.
        """
        sizes = self.generation_mode().input_sizes(dataset)
        if sizes is None:  # prior samples and interpolation pairs of a split
            return indices
        sizes = np.asarray(sizes)[indices]
        keep = (sizes > 1) & (sizes <= self.cfg.max_sentence_length)
        if getattr(dataset, "for_inference", False) and not keep.all():
            dropped = indices[~keep]
            message = (
                f"{len(dropped)} input(s) empty or longer than --max-sentence-length "
                f"{self.cfg.max_sentence_length} tokens (inputs {dropped[:10].tolist()})"
            )
            if not ignore_invalid_inputs:
                raise ValueError(message + "; raise --max-sentence-length to decode them")
            logger.warning(f"skipping {message}")
        return indices[keep]

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        """Inputs from fairseq-interactive or the hub interface, for the current mode."""
        dataset = self.generation_mode().inference_dataset(src_tokens, src_lengths)
        dataset.for_inference = True
        return dataset

    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        """Input lines -> token ids; unusable lines are skipped with a message and counted
        (fairseq-interactive hands over one buffer of lines at a time)."""
        mode = self.generation_mode()
        tokens = []
        for line in lines:
            try:
                tokens.append(mode.encode_line(line, encode_fn))
            except InputError as error:
                skip_input(self, error)
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
        if from_checkpoint:
            forget_pretrained_paths(cfg)
        return super().build_model(cfg, from_checkpoint)

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        self.generation_mode().generation_args(args)
        return super().build_generator(
            models, args, seq_gen_cls=seq_gen_cls, extra_gen_cls_kwargs=extra_gen_cls_kwargs, **kwargs
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Decode the latent code the mode asks for, with any fairseq search."""
        with torch.no_grad():
            return self.generation_mode().decode(
                generator, models, sample, prefix_tokens=prefix_tokens, constraints=constraints
            )
