from . import vrae, vrae_transformer  # noqa: F401
