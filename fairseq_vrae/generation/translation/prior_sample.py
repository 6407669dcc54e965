"""K draws of p(z|x) per source (``--samples-per-source``), each fixed by (--seed,
sentence id, k) and drawn at ``--prior-temperature``, each decoded with the user's
search: K x ``--nbest`` hypotheses per source, draw by draw (``--distinct-draws``: none
repeated while the beams hold enough)."""

import torch

from ...vae_math import sentence_seeds
from .base import TranslationMode, register_translation_mode


@register_translation_mode("prior-sample")
class PriorSample(TranslationMode):
    options = ("samples_per_source", "prior_temperature", "seed", "distinct_draws")
    input_keys = ("latent_seeds", "latent_temperature")

    def __init__(self, task, **options):
        super().__init__(task, **options)
        if self.cfg.samples_per_source < 1:
            raise ValueError(f"--samples-per-source must be >= 1, got {self.cfg.samples_per_source}")
        if self.temperature < 0:
            raise ValueError(f"--prior-temperature must be >= 0, got {self.temperature}")
        self._nbest = None  # hypotheses kept per draw (--nbest), once a generator is built
        self._nbest_of_args = {}  # id(args) -> the user's --nbest, as build_generator first saw it

    @property
    def temperature(self) -> float:
        return float(getattr(self.cfg, "prior_temperature", 1.0))  # older configs lack it

    def latent_temperature(self, models) -> float:
        """The scale of sigma(x) the encoder draws with: ``--prior-temperature``."""
        return self.temperature

    def generation_args(self, args) -> None:
        super().generation_args(args)
        samples = self.cfg.samples_per_source
        if samples > 1:
            # fairseq-generate/-interactive print --nbest hypotheses per source: K x the user's
            base = self._nbest_of_args.setdefault(id(args), args.nbest)
            args.nbest = base * samples
            self._nbest = base

    def draw_seeds(self, ids, samples: int):
        """The seed of each (source, draw), id-major: draw k of a source is its own."""
        return sentence_seeds(self.cfg.seed, ids, samples)

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        samples = self.cfg.samples_per_source
        net_input = sample["net_input"]
        batch_size = net_input["src_tokens"].size(0)
        ids = sample.get("id")
        if ids is None:
            ids = torch.arange(batch_size)
        rows = torch.arange(batch_size, device=net_input["src_tokens"].device).repeat_interleave(samples)

        def repeat(value):
            if torch.is_tensor(value) and value.dim() > 0 and value.size(0) == batch_size:
                return value.index_select(0, rows)
            return value

        expanded = {key: repeat(value) for key, value in net_input.items() if key != "prev_output_tokens"}
        expanded["latent_seeds"] = self.draw_seeds(ids, samples)
        expanded["latent_temperature"] = self.latent_temperature(models)
        hypotheses = super().decode(
            generator, models, {"id": ids.repeat_interleave(samples), "net_input": expanded},
            prefix_tokens=None if prefix_tokens is None else repeat(prefix_tokens),
            constraints=None if constraints is None else repeat(constraints),
        )
        keep = self._nbest if samples > 1 else None
        if not getattr(self.cfg, "distinct_draws", False):  # older configs lack it
            return [
                [hypo for k in range(samples) for hypo in hypotheses[b * samples + k][:keep]]
                for b in range(batch_size)
            ]
        return [distinct_draws([hypotheses[b * samples + k] for k in range(samples)], keep or 1)
                for b in range(batch_size)]


def distinct_draws(beams, keep: int):
    """``--distinct-draws``: draw by draw, the ``keep`` best hypotheses of its beam whose
    tokens no earlier draw of the source kept; a draw short of unused hypotheses fills up
    with its best ones, so that every draw still gives ``keep``."""
    taken, kept = set(), []
    for beam in beams:
        keys = [tuple(hypo["tokens"].tolist()) for hypo in beam]
        chosen = [i for i, key in enumerate(keys) if key not in taken][:keep]
        chosen += [i for i in range(len(beam)) if i not in chosen][:keep - len(chosen)]
        taken.update(keys[i] for i in chosen)
        kept.extend(beam[i] for i in chosen)
    return kept
