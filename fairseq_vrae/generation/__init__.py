"""Latent-sampling generation modes for ``--latent-mode``: one module per mode, each
with its inputs (dataset), its parsing of interactive lines and its decoding.

A mode registers itself with :func:`register_generation_mode`; every module of this
package is imported here, so a new mode is one new file.  The modes of the
``latent_translation`` task live in the ``translation`` subpackage, the same way.
"""

import os

from .base import (GENERATION_MODES, GenerationMode, InputError, ListWithSizes, ModeOptions, import_mode_files,
                   register_generation_mode)

import_mode_files(__name__, os.path.dirname(__file__))

__all__ = ["GENERATION_MODES", "GenerationMode", "InputError", "ListWithSizes", "ModeOptions", "register_generation_mode"]
