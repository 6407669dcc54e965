from . import vrae_lm  # noqa: F401
