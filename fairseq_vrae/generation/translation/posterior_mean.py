"""z = the mean of q(z|x, y), read from the reference translation: what z carries."""

from .base import TranslationMode, register_translation_mode


@register_translation_mode("posterior-mean")
class PosteriorMean(TranslationMode):
    input_keys = ("posterior_tokens", "sample_posterior")

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        net_input = dict(sample["net_input"])
        if "prev_output_tokens" not in net_input:
            raise ValueError(
                "--latent-mode posterior-mean reads the reference translation, and this input "
                "has none (fairseq-interactive, or data without the target side): use "
                "fairseq-generate on binarized pairs, or --latent-mode prior-mean"
            )
        net_input.update(posterior_tokens=net_input["prev_output_tokens"], sample_posterior=False)
        return super().decode(generator, models, dict(sample, net_input=net_input),
                              prefix_tokens=prefix_tokens, constraints=constraints)
