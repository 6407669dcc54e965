"""The prior's K fixed slots (``--samples-per-source K``): draw k of every source is
mu(x) + sigma(x) * e_k with the same noise e_k (:func:`slot_noise`), the points a model
trained with ``vrae_elbo --prior-draws K --prior-draw-slots`` learned to make stand for
different translations; scaled by ``--prior-temperature`` and decoded as ``prior-sample``'s
draws (K x ``--nbest`` hypotheses per source, slot by slot)."""

from ...vae_math import slot_seeds
from .base import register_translation_mode
from .prior_sample import PriorSample


@register_translation_mode("prior-slots")
class PriorSlots(PriorSample):
    options = ("samples_per_source", "prior_temperature")

    def draw_seeds(self, ids, samples: int):
        return slot_seeds(samples).repeat(len(ids))
