from . import vrae  # noqa: F401
