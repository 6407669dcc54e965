"""fairseq_vrae: the sentence VAE of Bowman et al. (2015) as a fairseq plugin.

Load it with ``--user-dir fairseq_vrae`` (or ``import fairseq_vrae``); importing the
package registers the ``vrae`` model, the ``vrae_elbo`` criterion and the ``vrae_lm``
task.
"""

from . import compat

compat.install()

from . import criterions, models, tasks  # noqa: E402,F401  (registration side effects)
from .models.vrae import VRAEModel  # noqa: E402,F401
