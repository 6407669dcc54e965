"""The ``--latent-mode`` choices of the ``latent_translation`` task: one module per
mode, each registered with :func:`register_translation_mode`; every module of this
package is imported here, so a new mode is one new file."""

import importlib
import os

from .base import TRANSLATION_MODES, TranslationMode, register_translation_mode

for _file in sorted(os.listdir(os.path.dirname(__file__))):
    if _file.endswith(".py") and not _file.startswith("_") and _file != "base.py":
        importlib.import_module(f"{__name__}.{_file[:-3]}")

__all__ = ["TRANSLATION_MODES", "TranslationMode", "register_translation_mode"]
