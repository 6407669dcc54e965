"""z = the mean of p(z|x): deterministic, what the stock ``translation`` task does too."""

from .base import TranslationMode, register_translation_mode


@register_translation_mode("prior-mean")
class PriorMean(TranslationMode):
    pass
