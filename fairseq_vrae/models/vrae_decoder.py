"""Generative network: an RNN language model whose initial state comes from z."""

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import FairseqIncrementalDecoder
from torch import Tensor

from .vrae_encoder import RNN_CELLS


class VRAEDecoder(FairseqIncrementalDecoder):
    """p(x|z): an LSTM/GRU language model conditioned on z.

    z sets the initial state of every layer through a linear bridge (as in He et al.
    2019: c0 = W z + b and h0 = tanh(c0) for an LSTM; h0 = tanh(W z + b) for a GRU; with
    ``bridge="linear"`` h0 = W z + b, c0 too)
    and, with ``latent_input``, is also concatenated to each input embedding (Bowman
    et al. 2015 tried both).  Incremental decoding keeps the RNN state per layer, so
    fairseq's SequenceGenerator (beam, sampling) drives it unchanged.
    """

    def __init__(
        self,
        dictionary,
        embed_tokens: nn.Embedding,
        cell: str = "lstm",
        hidden_size: int = 256,
        num_layers: int = 1,
        latent_dim: int = 32,
        latent_input: bool = False,
        latent_zero_init: bool = False,
        bridge: str = "tanh",
        dropout_in: float = 0.0,
        dropout_out: float = 0.0,
        tie_output_embeddings: bool = False,
        max_target_positions: int = 1024,
    ):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.dropout_in = nn.Dropout(dropout_in)
        self.dropout_out = nn.Dropout(dropout_out)
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.latent_input = latent_input
        if bridge not in ("tanh", "linear"):
            raise ValueError(f"--decoder-bridge must be tanh or linear, got {bridge!r}")
        self.bridge_activation = bridge
        self.max_target_positions = max_target_positions
        input_size = embed_tokens.embedding_dim + (latent_dim if latent_input else 0)
        self.rnn = RNN_CELLS[cell](
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout_out if num_layers > 1 else 0.0,
        )
        self.bridge = nn.Linear(latent_dim, num_layers * hidden_size)
        if latent_zero_init:
            self.silence_latent_paths()
        embed_dim = embed_tokens.embedding_dim
        self.tie_output_embeddings = tie_output_embeddings
        if tie_output_embeddings:
            self.output_projection = None
            self.hidden_to_embed = (
                nn.Linear(hidden_size, embed_dim) if hidden_size != embed_dim else None
            )
        else:
            self.hidden_to_embed = None
            self.output_projection = nn.Linear(hidden_size, len(dictionary))

    # ----------------------------------------------------------------------------------

    # parameters through which z reaches the RNN (none of them in a language model)
    latent_parameter_prefixes = ("bridge.",)

    def silence_latent_paths(self) -> None:
        """Zero the weights through which z reaches the RNN: it then starts as a plain
        language model (zero initial state, z's input columns silent), and those weights
        still get gradient from the first step."""
        with torch.no_grad():
            self.bridge.weight.zero_()
            self.bridge.bias.zero_()
            if self.latent_input:
                self.rnn.weight_ih_l0[:, self.embed_tokens.embedding_dim:].zero_()

    def initial_state(self, z: Tensor):
        """RNN state for every layer from z: ``(layers, batch, hidden)`` tensors."""
        batch = z.size(0)
        pre = self.bridge(z).view(batch, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        hidden = torch.tanh(pre) if self.bridge_activation == "tanh" else pre
        return (hidden, pre) if self.cell == "lstm" else hidden

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, Tensor]] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        **kwargs,
    ) -> Tuple[Tensor, Dict[str, Optional[Tensor]]]:
        features, extra = self.extract_features(
            prev_output_tokens, encoder_out, incremental_state
        )
        return self.output_layer(features), extra

    def extract_features(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, Tensor]] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        **kwargs,
    ):
        if encoder_out is None:
            raise ValueError("the VRAE decoder needs a latent code (encoder_out['z'])")
        z = encoder_out["z"]
        state = None
        if incremental_state is not None:
            cached = self.get_incremental_state(incremental_state, "rnn_state")
            if cached is not None:
                prev_output_tokens = prev_output_tokens[:, -1:]
                state = (cached["h"], cached["c"]) if self.cell == "lstm" else cached["h"]
        if state is None:
            state = self.initial_state(z)

        x = self.dropout_in(self.embed_tokens(prev_output_tokens))
        if self.latent_input:
            x = torch.cat([x, z.to(x.dtype).unsqueeze(1).expand(-1, x.size(1), -1)], dim=-1)
        output, state = self.rnn(x.transpose(0, 1), state)

        if incremental_state is not None:
            if self.cell == "lstm":
                cache = {"h": state[0], "c": state[1]}
            else:
                cache = {"h": state, "c": None}
            self.set_incremental_state(incremental_state, "rnn_state", cache)
        return self.dropout_out(output.transpose(0, 1)), {"attn": None}

    def output_layer(self, features: Tensor) -> Tensor:
        if self.output_projection is not None:
            return self.output_projection(features)
        if self.hidden_to_embed is not None:
            features = self.hidden_to_embed(features)
        return F.linear(features, self.embed_tokens.weight)

    def reorder_incremental_state(
        self,
        incremental_state: Dict[str, Dict[str, Optional[Tensor]]],
        new_order: Tensor,
    ):
        cached = self.get_incremental_state(incremental_state, "rnn_state")
        if cached is None:
            return
        reordered = {
            key: (None if value is None else value.index_select(1, new_order))
            for key, value in cached.items()
        }
        self.set_incremental_state(incremental_state, "rnn_state", reordered)

    def max_positions(self) -> int:
        return self.max_target_positions
