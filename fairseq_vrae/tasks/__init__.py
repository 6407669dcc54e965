from . import latent_translation, vrae_lm  # noqa: F401
