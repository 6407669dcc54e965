"""Reconstruction: decode each sentence from its posterior mean or a posterior sample."""

from .base import GenerationMode, register_generation_mode


@register_generation_mode("posterior-mean")
class PosteriorMean(GenerationMode):
    """z = E[q(z|x)]: deterministic, the usual reconstruction."""


@register_generation_mode("posterior-sample")
class PosteriorSample(GenerationMode):
    """z ~ q(z|x), one draw per sentence, shared by all of its beams."""

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        net_input = dict(sample["net_input"], sample_posterior=True)
        return generator.generate(models, dict(sample, net_input=net_input), prefix_tokens=prefix_tokens, constraints=constraints)
