"""Inference network: an RNN reads the sentence and parameterises q(z|x)."""

from typing import Dict, Optional

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.models import FairseqEncoder
from torch import Tensor

from ..vae_math import LOGVAR_MIN, clamp_logvar, reparameterize

RNN_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class VRAEEncoder(FairseqEncoder):
    """Maps a sentence to the mean and log-variance of a diagonal Gaussian.

    The summary is the final hidden state of the last layer (both directions when
    bidirectional), read from a packed sequence so padding never changes it.

    ``forward`` returns ``{"mu", "logvar", "z"}``, each ``(batch, latent_dim)``.  ``z``
    is a reparameterised sample when ``sample_posterior`` is True (training, ELBO
    evaluation) and ``mu`` otherwise.  Passing ``latent`` skips the network and decodes
    that code instead (prior samples, interpolation).
    """

    def __init__(
        self,
        dictionary,
        embed_tokens: nn.Embedding,
        cell: str = "lstm",
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
        latent_dim: int = 32,
        dropout_in: float = 0.0,
        dropout_out: float = 0.0,
    ):
        super().__init__(dictionary)
        self.padding_idx = dictionary.pad()
        self.embed_tokens = embed_tokens
        self.dropout_in = nn.Dropout(dropout_in)
        self.dropout_out = nn.Dropout(dropout_out)
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.rnn = RNN_CELLS[cell](
            input_size=embed_tokens.embedding_dim,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout_out if num_layers > 1 else 0.0,
        )
        self.latent_dim = latent_dim
        self.posterior = nn.Linear(hidden_size * self.num_directions, 2 * latent_dim)
        self.sample_posterior = True

    def summarize(self, src_tokens: Tensor, src_lengths: Tensor) -> Tensor:
        """Final hidden state of the top layer, ``(batch, directions * hidden)``."""
        if src_tokens.size(1) > 0 and src_tokens[:, 0].eq(self.padding_idx).any():
            src_tokens = utils.convert_padding_direction(
                src_tokens, self.padding_idx, left_to_right=True
            )
        lengths = src_tokens.ne(self.padding_idx).sum(dim=1).clamp(min=1)
        x = self.dropout_in(self.embed_tokens(src_tokens)).transpose(0, 1)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.cpu(), enforce_sorted=False
        )
        _, final = self.rnn(packed)
        hidden = final[0] if isinstance(final, tuple) else final
        batch = src_tokens.size(0)
        top = hidden.view(self.num_layers, self.num_directions, batch, -1)[-1]
        return self.dropout_out(top.transpose(0, 1).reshape(batch, -1))

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Optional[Tensor] = None,
        latent: Optional[Tensor] = None,
        **unused,
    ) -> Dict[str, Tensor]:
        if latent is not None:
            # a given code is a point mass: the smallest variance the model represents
            return {"mu": latent, "logvar": torch.full_like(latent, LOGVAR_MIN), "z": latent}
        mu, logvar = self.posterior(self.summarize(src_tokens, src_lengths)).chunk(2, dim=-1)
        logvar = clamp_logvar(logvar)
        z = reparameterize(mu, logvar) if self.sample_posterior else mu
        return {"mu": mu, "logvar": logvar, "z": z}

    def reorder_encoder_out(self, encoder_out: Dict[str, Tensor], new_order: Tensor):
        return {key: value.index_select(0, new_order) for key, value in encoder_out.items()}

    def max_positions(self) -> int:
        return int(1e5)
