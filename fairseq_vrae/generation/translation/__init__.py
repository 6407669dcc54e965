"""The ``--latent-mode`` choices of the ``latent_translation`` task: one module per
mode, each registered with :func:`register_translation_mode`; every module of this
package is imported here, so a new mode is one new file."""

import os

from ..base import import_mode_files
from .base import TRANSLATION_MODES, TranslationMode, register_translation_mode

import_mode_files(__name__, os.path.dirname(__file__))

__all__ = ["TRANSLATION_MODES", "TranslationMode", "register_translation_mode"]
