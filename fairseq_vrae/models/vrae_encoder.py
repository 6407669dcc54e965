"""Inference network: an RNN reads the sentence and parameterises q(z|x)."""

import torch.nn as nn
from fairseq import utils
from torch import Tensor

from .latent import LatentLayer
from .latent_encoder import LatentEncoder

RNN_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class VRAEEncoder(LatentEncoder):
    """Reads a sentence with an RNN and hands its summary to the latent layer.

    The summary is the final hidden state of the last layer (both directions when
    bidirectional), read from a packed sequence so padding never changes it.

    ``forward`` returns the latent layer's output contract (see
    :mod:`fairseq_vrae.models.latent`): ``z`` is a reparameterised posterior sample when
    ``sample_posterior`` is True (training, ELBO evaluation) and the posterior mean
    otherwise.  Passing ``latent`` skips the network and decodes that code instead
    (prior samples, interpolation).
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
        posterior_bn_gamma: float = 0.0,
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
        self.latent = LatentLayer(hidden_size * self.num_directions, latent_dim, posterior_bn_gamma=posterior_bn_gamma)

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

    def upgrade_state_dict_named(self, state_dict, name):
        """Checkpoints written before the latent layer was a module of its own."""
        prefix = f"{name}." if name else ""
        for suffix in ("weight", "bias"):
            old = f"{prefix}posterior.{suffix}"
            if old in state_dict:
                state_dict[f"{prefix}latent.posterior.{suffix}"] = state_dict.pop(old)
        buffer = f"{prefix}latent.kl_schedule_updates"
        if buffer not in state_dict:
            state_dict[buffer] = self.latent.kl_schedule_updates.clone()
        return state_dict

    def max_positions(self) -> int:
        return int(1e5)
