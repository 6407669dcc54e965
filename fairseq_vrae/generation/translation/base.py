"""What every translation mode provides, and their registry."""

from typing import Dict, Tuple, Type

import torch

from ..base import Mode, register_generation_mode

#: --latent-mode name -> mode class of the latent_translation task, in registration order
TRANSLATION_MODES: Dict[str, Type["TranslationMode"]] = {}


def register_translation_mode(name: str):
    return register_generation_mode(name, TRANSLATION_MODES)


class TranslationMode(Mode):
    """Which z a conditional VAE translates with; the default decodes the source as
    the stock ``translation`` task does (the encoder then uses the prior mean).
    ``task`` is the hosting ``latent_translation`` task.
    """

    #: the task options this mode reads (besides --latent-mode)
    options: Tuple[str, ...] = ()
    #: the keys this mode adds to the encoder's input (see ``CVAEEncoder.forward``)
    input_keys: Tuple[str, ...] = ()

    def decode(self, generator, models, sample, prefix_tokens=None, constraints=None):
        with torch.no_grad():
            return generator.generate(models, sample, prefix_tokens=prefix_tokens, constraints=constraints)
