from . import cvae_lstm, cvae_transformer, vrae, vrae_transformer  # noqa: F401
