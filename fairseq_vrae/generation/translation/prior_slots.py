"""The prior's K fixed slots (``--samples-per-source K``): draw k of every source is
mu(x) + S * sigma(x) * e_k with the same noise e_k (:func:`slot_noise`) and S the model's
``--prior-slot-scale``, the points a model trained with ``vrae_elbo --prior-draws K
--prior-draw-slots`` learned to make stand for different translations; scaled by
``--prior-temperature`` (1: the slots as trained) and decoded as ``prior-sample``'s draws
(K x ``--nbest`` hypotheses per source, slot by slot)."""

from ...vae_math import slot_seeds
from .base import register_translation_mode
from .prior_sample import PriorSample


def slot_scale(models) -> float:
    """The ``--prior-slot-scale`` the models were trained with (1 for models without it);
    an ensemble's models must agree, since they share one code per slot."""
    scales = {float(getattr(model.encoder, "prior_slot_scale", 1.0)) for model in models}
    if len(scales) > 1:
        raise ValueError(f"--latent-mode prior-slots: the ensemble's models were trained with different "
                         f"--prior-slot-scale values {sorted(scales)}; translate with one of them at a time")
    return scales.pop() if scales else 1.0


@register_translation_mode("prior-slots")
class PriorSlots(PriorSample):
    options = ("samples_per_source", "prior_temperature", "distinct_draws")

    def draw_seeds(self, ids, samples: int):
        return slot_seeds(samples).repeat(len(ids))

    def latent_temperature(self, models) -> float:
        return self.temperature * slot_scale(models)
