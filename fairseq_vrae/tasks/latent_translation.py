"""The ``latent_translation`` task: fairseq's ``translation`` task that chooses which
latent code a conditional VAE (``cvae_transformer``, ``cvae_lstm``) translates with.

Every option of ``--task translation`` keeps its meaning.  Added:

* ``--latent-mode prior-mean`` (default): z = the mean of p(z|x), deterministic (what
  the stock ``translation`` task does with these models too);
* ``--latent-mode prior-sample --samples-per-source K``: K draws of p(z|x) per source,
  each fixed by (``--seed``, sentence id, k), each decoded with the user's search and
  printed as K x ``--nbest`` hypotheses of that source;
* ``--latent-mode prior-slots --samples-per-source K``: the K fixed slots of p(z|x), the
  same points of every source's prior, for a model trained with ``--prior-draw-slots``;
* ``--latent-mode posterior-mean``: z = the mean of q(z|x, y), read from the reference
  translation (fairseq-generate on binarized pairs only), to show what z carries;
* in training, ``--warm-start-optimizer``: a CVAE warm-started from a translation
  checkpoint (``--load-pretrained-encoder-from/--load-pretrained-decoder-from``) also starts
  its optimizer from that checkpoint's state for the parameters the two share.

Each mode is a file of ``generation/translation/``.

A fairseq-interactive line longer than the source positions the model takes is skipped
with a message and counted, as ``vrae_lm`` does; the other lines of its buffer are
translated under their own ids (binarized splits and the hub interface keep fairseq's
check, and its ``--skip-invalid-size-inputs-valid-test``).
"""

import logging
from dataclasses import dataclass, field
from fairseq.dataclass import ChoiceEnum
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from ..evaluation import LatentEvaluationConfig
from ..generation.translation import TRANSLATION_MODES, TranslationMode
from ..inputs import InteractiveLines, interactive_lines, skip_input
from ..models.cvae import CVAEModelMixin
from ..models.warm_start import carry_optimizer_state, forget_pretrained_paths

logger = logging.getLogger(__name__)

LATENT_MODES = ChoiceEnum(list(TRANSLATION_MODES))


@dataclass
class LatentTranslationConfig(TranslationConfig):
    latent_mode: LATENT_MODES = field(
        default="prior-mean",
        metadata={"help": "generation: which z to translate with: the mean of p(z|x), draws "
                  "from p(z|x), its fixed slots (--prior-draw-slots), or the mean of q(z|x, y) "
                  "(needs the reference)"},
    )
    samples_per_source: int = field(
        default=1,
        metadata={"help": "--latent-mode prior-sample/prior-slots: draws (slots) of z per source, each "
                  "decoded with the chosen search (K x --nbest hypotheses per source)"},
    )
    prior_temperature: float = field(
        default=1.0,
        metadata={"help": "--latent-mode prior-sample/prior-slots: scale of p(z|x)'s standard deviation (0 draws its "
                  "mean every time; above 1, draws farther from it: more diverse translations)"},
    )
    distinct_draws: bool = field(
        default=False,
        metadata={"help": "--latent-mode prior-sample/prior-slots: each draw keeps the best hypotheses of its "
                  "beam that no earlier draw of the source kept (K x --nbest different translations per "
                  "source while the beam holds enough; a draw whose beam holds none keeps its best)"},
    )
    warm_start_optimizer: bool = field(
        default=False,
        metadata={"help": "training with --load-pretrained-encoder-from/--load-pretrained-decoder-from: also "
                  "start the optimizer from that checkpoint's state (Adam's moments and step counts) for the "
                  "parameters the CVAE shares with it, as resuming its training would; z's own start fresh"},
    )
    seed: int = II("common.seed")


@register_task("latent_translation", dataclass=LatentTranslationConfig)
class LatentTranslationTask(TranslationTask):
    """``translation`` with a choice of latent code for conditional VAEs."""

    def __init__(self, cfg: LatentTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        if cfg.samples_per_source > 1 and "samples_per_source" not in TRANSLATION_MODES[cfg.latent_mode].options:
            several = [name for name, mode in TRANSLATION_MODES.items() if "samples_per_source" in mode.options]
            raise ValueError(
                f"--samples-per-source {cfg.samples_per_source} draws several codes per source, "
                f"which needs --latent-mode {' or '.join(several)} (--latent-mode {cfg.latent_mode} gives one)"
            )
        self._mode = TRANSLATION_MODES[cfg.latent_mode](self)  # a mode checks its options when it is made
        self.skipped_inputs = 0
        self._interactive_lines_read = 0  # the id fairseq-interactive gives the next line
        self._optimizer_sources = {}  # --warm-start-optimizer: checkpoint -> the sides loaded from it

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # so that fairseq-validate takes --iw-samples without --criterion (the override
        # reaches the checkpoint's vrae_elbo criterion)
        gen_parser_from_dataclass(parser, LatentEvaluationConfig())

    def build_model(self, cfg, from_checkpoint=False):
        name = getattr(cfg, "_name", None) or getattr(cfg, "arch", None)
        model_class = ARCH_MODEL_REGISTRY.get(name) or MODEL_REGISTRY.get(name)
        if model_class is not None and not issubclass(model_class, CVAEModelMixin):
            raise ValueError(
                f"the latent_translation task needs a conditional VAE (--arch cvae_transformer "
                f"or cvae_lstm), but this checkpoint/configuration holds a {name!r} model, which "
                f"has no latent code: translate it with --task translation"
            )
        if from_checkpoint:
            forget_pretrained_paths(cfg)
        elif self.cfg.warm_start_optimizer:
            for side in ("encoder", "decoder"):
                path = getattr(cfg, f"load_pretrained_{side}_from", None)
                if path:
                    self._optimizer_sources.setdefault(path, []).append(side)
            if not self._optimizer_sources:
                raise ValueError("--warm-start-optimizer carries the optimizer state of the checkpoint the CVAE "
                                 "starts from: name it with --load-pretrained-encoder-from/--load-pretrained-decoder-from")
        return super().build_model(cfg, from_checkpoint)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's step; before the first update of a run from scratch with
        ``--warm-start-optimizer``, the warm start's optimizer state is carried over (a run
        resumed from its own checkpoint has its own state)."""
        if self._optimizer_sources:
            if update_num == 0:
                while hasattr(model, "module"):  # distributed wrappers
                    model = model.module
                for path, sides in self._optimizer_sources.items():
                    carry_optimizer_state(optimizer, model, self, path, sides)
            self._optimizer_sources = {}
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        """One buffer of fairseq-interactive's lines -> token ids, marked as such for
        :meth:`filter_indices_by_size` (every line is kept here, so that each keeps its
        id, and with it its printed S-/H- number and its --latent-mode prior-sample draws)."""
        tokens, lengths = super().get_interactive_tokens_and_lengths(lines, encode_fn)
        tokens = InteractiveLines(tokens, first_id=self._interactive_lines_read)
        self._interactive_lines_read += len(lines)
        return tokens, lengths

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        """fairseq's size check; for fairseq-interactive's lines, one over the source
        positions is skipped with a message and counted, not the end of the run."""
        lines = interactive_lines(dataset)
        if lines is None:
            return super().filter_indices_by_size(indices, dataset, max_positions, ignore_invalid_inputs)
        kept, ignored = dataset.filter_indices_by_size(indices, max_positions)
        limit = max_positions[0] if isinstance(max_positions, (tuple, list)) else max_positions
        for index in sorted(int(i) for i in ignored):
            skip_input(self, (
                f"{int(dataset.src_sizes[index])} tokens with </s> (input S-{lines.first_id + index}), "
                f"more than the {limit} source positions of the model (--max-source-positions)"
            ))
        return kept

    def generation_mode(self) -> TranslationMode:
        """The ``--latent-mode`` in force (made once, again only if ``cfg.latent_mode``
        was changed)."""
        if self._mode.name != self.cfg.latent_mode:
            self._mode = TRANSLATION_MODES[self.cfg.latent_mode](self)
        return self._mode

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        self.generation_mode().generation_args(args)
        return super().build_generator(
            models, args, seq_gen_cls=seq_gen_cls, extra_gen_cls_kwargs=extra_gen_cls_kwargs, **kwargs
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Translate with the code the mode asks for, with any fairseq search."""
        return self.generation_mode().decode(generator, models, sample, prefix_tokens=prefix_tokens,
                                             constraints=constraints)
