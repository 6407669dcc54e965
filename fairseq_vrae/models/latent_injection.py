"""z's way into a decoder, shared by every family: the embedding shift (a projection of z
added to each input embedding), the memory position (a projection of z that attention
reads beside the source), the conditional VAEs' bag-of-words head, and the parameters
through which z reaches the decoder.

A decoder that adds z to its embeddings uses a :class:`LatentShiftedEmbedding` as its
word embedding; :class:`LatentPathsMixin` builds z's paths (``add_latent_paths``), applies
them while the decoder runs (``embeddings_shifted_by``, ``append_memory_position``) and
gives a warm start what it needs: which parameters a language or translation model
lacks, and how to silence them so the decoder starts as that model.
"""

from contextlib import contextmanager
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor


class LatentShiftedEmbedding(nn.Embedding):
    """A word embedding that adds a per-sentence vector (the projection of z) to every
    position; the decoder sets ``shift`` before each call."""

    shift: Optional[Tensor] = None

    def forward(self, tokens: Tensor) -> Tensor:
        embedded = super().forward(tokens)
        if self.shift is not None:
            embedded = embedded + self.shift.to(embedded.dtype).unsqueeze(1)
        return embedded


def latent_shift_projection(latent_dim: int, dim: int) -> nn.Linear:
    """z's projection onto the word embeddings, starting at zero: at initialisation it
    adds nothing to the embeddings (rather than 32 mostly uninformative dimensions of
    posterior noise at every position), and z enters that way as training finds it
    useful.  The weight still gets gradient from the first step."""
    projection = nn.Linear(latent_dim, dim)
    nn.init.zeros_(projection.weight)
    nn.init.zeros_(projection.bias)
    return projection


class LatentPathsMixin:
    """For decoders whose z paths are ``latent_to_embedding`` (optional),
    ``latent_to_memory`` (optional) and, in the conditional VAEs, ``bag_of_words``."""

    #: parameters through which z reaches the decoder (none of them in an LM or a translation model)
    latent_parameter_prefixes = ("latent_to_embedding.", "latent_to_memory.", "bag_of_words.")

    def add_latent_paths(self, latent_dim: int, injection: str, embed_dim: int, memory_dim: int,
                         bow_dim: Optional[int] = None, bow_head: str = "shared", vocab_size: int = 0) -> None:
        """z's paths for ``--latent-injection`` ``embedding``, ``memory`` or ``both``: the
        shift of the ``embed_dim`` word embeddings, the memory position of ``memory_dim``
        and, given ``bow_dim`` (the output layer's input size), the bag-of-words head that
        maps z into that space (``shared``) or onto the ``vocab_size`` words (``own``)."""
        self.latent_to_embedding = (
            latent_shift_projection(latent_dim, embed_dim) if injection in ("embedding", "both") else None
        )
        self.latent_to_memory = nn.Linear(latent_dim, memory_dim) if injection in ("memory", "both") else None
        if bow_dim is not None:
            self.bow_head = bow_head
            self.bag_of_words = nn.Linear(latent_dim, vocab_size if bow_head == "own" else bow_dim)

    @contextmanager
    def embeddings_shifted_by(self, z: Tensor, scale: float = 1.0):
        """While the block runs, every input embedding is shifted by z's projection divided
        by ``scale``.  A Transformer passes its ``embed_scale``: fairseq multiplies the
        embeddings by it (sqrt(dim)), so the shift arrives at the scale of the scaled
        embeddings and cannot swamp them."""
        projection = getattr(self, "latent_to_embedding", None)
        self.embed_tokens.shift = None if projection is None else projection(z) / scale
        try:
            yield
        finally:
            self.embed_tokens.shift = None

    def latent_memory(self, z: Tensor, like: Tensor) -> Tensor:
        """z's memory position, ``1 x batch x dim`` in the dtype of the states ``like``."""
        return self.latent_to_memory(z).to(like.dtype).unsqueeze(0)

    def append_memory_position(self, z: Tensor, states: Tensor, padding_mask: Tensor,
                               mask_time_dim: int) -> Tuple[Tensor, Tensor]:
        """Source states (time first) and their padding mask with z's memory position
        appended as one more time step, never masked."""
        shape = list(padding_mask.shape)
        shape[mask_time_dim] = 1
        return (torch.cat([states, self.latent_memory(z, states)], dim=0),
                torch.cat([padding_mask, padding_mask.new_zeros(shape)], dim=mask_time_dim))

    def silence_latent_paths(self) -> None:
        """Zero z's projection onto the embeddings: the decoder then computes what it
        would without z (a memory position, if any, still takes part in attention)."""
        projection = getattr(self, "latent_to_embedding", None)
        if projection is not None:
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)

    def latent_features(self, z: Tensor) -> Tensor:
        """z in the output layer's input space (the conditional VAEs' bag-of-words head)."""
        return self.bag_of_words(z)
