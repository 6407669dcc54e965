"""fairseq_vrae: the sentence VAE of Bowman et al. (2015) and a conditional VAE for
translation, as a fairseq plugin.

Load it with ``--user-dir fairseq_vrae`` (or ``import fairseq_vrae``); importing the
package registers:

* models ``vrae`` (architectures ``vrae_lstm``, ``vrae_lstm_big``, ``vrae_gru``),
  ``vrae_transformer`` (``vrae_transformer``, ``vrae_transformer_big``),
  ``cvae_transformer`` (``cvae_transformer``, ``cvae_transformer_iwslt_de_en``) and
  ``cvae_lstm``;
* the criterion ``vrae_elbo``;
* the tasks ``vrae_lm`` (with the generation modes of :mod:`fairseq_vrae.generation`)
  and ``latent_translation``.
"""

from . import compat

compat.install()

from . import criterions, models, tasks  # noqa: E402,F401  (registration side effects)
from .models.vrae import VRAEModel  # noqa: E402,F401
