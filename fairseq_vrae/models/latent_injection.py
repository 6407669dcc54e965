"""z's way into a decoder, shared by every family: the embedding shift (a projection of z
added to each input embedding) and the parameters through which z reaches the decoder.

A decoder that adds z to its embeddings uses a :class:`LatentShiftedEmbedding` as its
word embedding, a :func:`latent_shift_projection` as ``latent_to_embedding``, and
:class:`LatentPathsMixin` for what a warm start needs: which parameters a language or
translation model lacks, and how to silence them so the decoder starts as that model.
"""

from typing import Optional

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
