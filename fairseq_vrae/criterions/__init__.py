from . import vrae_elbo  # noqa: F401
