"""z's way into a decoder, shared by every family: the embedding shift (a projection of z
added to each input embedding), the memory position (a projection of z that attention
reads beside the source), the output shift (a projection of z added to the states the
output layer turns into word scores), the conditional VAEs' bag-of-words head, and the
parameters through which z reaches the decoder.

The output shift is the most direct of the three: its projection's gradient is the
output layer's error times z, with no pretrained network in between, so a decoder
warm-started from a translation or language model, which predicts well without z,
still learns to read it (the embedding shift must move the whole network's input, by
an amount fairseq's Transformer divides by sqrt(dim)).

A decoder that adds z to its embeddings uses a :class:`LatentShiftedEmbedding` as its
word embedding; :class:`LatentPathsMixin` builds z's paths (``add_latent_paths``), applies
them while the decoder runs (``embeddings_shifted_by``, ``append_memory_position``) and
gives a warm start what it needs: which parameters a language or translation model
lacks, and how to silence them so the decoder starts as that model.
"""

from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor


#: ``--latent-injection`` values and the paths each opens into the decoder
INJECTION_PATHS = {
    "embedding": ("embedding",),
    "memory": ("memory",),
    "both": ("embedding", "memory"),
    "output": ("output",),
    "embedding+output": ("embedding", "output"),
}
LATENT_INJECTION_CHOICES = list(INJECTION_PATHS)


def injection_paths(injection: str) -> Tuple[str, ...]:
    """The paths (``embedding``, ``memory``, ``output``) of a ``--latent-injection`` value."""
    if injection not in INJECTION_PATHS:
        raise ValueError(f"--latent-injection {injection}: choose one of {', '.join(INJECTION_PATHS)}")
    return INJECTION_PATHS[injection]


def starts_silent(injection: str) -> bool:
    """Whether every path of ``injection`` can start at zero, so that a warm-started decoder
    computes at update 0 what its language or translation model computes (a memory
    position changes attention's normalisation, zero or not)."""
    return "memory" not in injection_paths(injection)


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
    """z's projection onto the word embeddings (or the output states), starting at zero:
    at initialisation it adds nothing to them (rather than 32 mostly uninformative dimensions of
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
    latent_parameter_prefixes = ("latent_to_embedding.", "latent_to_memory.", "latent_to_output.", "bag_of_words.")
    output_shift: Optional[Tensor] = None

    def add_latent_paths(self, latent_dim: int, injection: str, embed_dim: int, memory_dim: int,
                         bow_dim: Optional[int] = None, bow_head: str = "shared", vocab_size: int = 0,
                         output_dim: Optional[int] = None) -> None:
        """z's paths for a ``--latent-injection`` value (:data:`INJECTION_PATHS`): the
        shift of the ``embed_dim`` word embeddings, the memory position of ``memory_dim``,
        the shift of the output layer's ``output_dim`` input states and, given ``bow_dim``
        (the output layer's input size), the bag-of-words head that maps z into that space
        (``shared``) or onto the ``vocab_size`` words (``own``)."""
        paths = injection_paths(injection)
        self.latent_to_embedding = latent_shift_projection(latent_dim, embed_dim) if "embedding" in paths else None
        self.latent_to_memory = nn.Linear(latent_dim, memory_dim) if "memory" in paths else None
        if "output" in paths and output_dim is None:
            raise ValueError(f"--latent-injection {injection}: this decoder has no output shift; "
                             f"choose one of embedding, memory, both")
        self.latent_to_output = latent_shift_projection(latent_dim, output_dim) if "output" in paths else None
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
        output = getattr(self, "latent_to_output", None)
        try:
            self.embed_tokens.shift = None if projection is None else projection(z) / scale
            self.output_shift = None if output is None else output(z)
            yield
        finally:
            self.embed_tokens.shift = None
            self.output_shift = None

    def output_shifted(self, features: Tensor) -> Tensor:
        """The output layer's input states (batch x time x dim) plus z's output shift, while
        :meth:`embeddings_shifted_by` runs (outside it, e.g. the bag-of-words head's
        call of the output layer, unchanged)."""
        if self.output_shift is None:
            return features
        return features + self.output_shift.to(features.dtype).unsqueeze(1)

    @property
    def z_only_shifts_output(self) -> bool:
        """Whether z reaches this decoder only through the output shift, into an affine
        output layer (no adaptive softmax): its scores under another code are then those
        under one code plus the output layer's map of the difference (:meth:`rescore`)."""
        return (getattr(self, "latent_to_output", None) is not None
                and getattr(self, "latent_to_embedding", None) is None
                and getattr(self, "latent_to_memory", None) is None
                and getattr(self, "adaptive_softmax", None) is None)

    def rescore(self, logits: Tensor, z_from: Tensor, z_to: Tensor) -> Tensor:
        """The scores (batch x time x vocabulary) the decoder gives with code ``z_to`` from
        the ``logits`` it gave with ``z_from``, when :attr:`z_only_shifts_output`: the output
        layer is affine, so moving its input by the difference of the two shifts moves its
        output by the layer's linear map of that difference, the same at every position."""
        shifts = self.latent_to_output(torch.stack([z_from, z_to]).to(logits.dtype))  # 2 x batch x dim
        moved = self.output_layer(shifts.unsqueeze(2))  # 2 x batch x 1 x vocabulary
        return logits + (moved[1] - moved[0])

    def logits_for_codes(self, prev_output_tokens: Tensor, encoder_out: Dict, codes: Tensor) -> List[Tensor]:
        """The decoder's scores (batch x time x vocabulary) under each code of ``codes``
        (draws x batch x latent_dim), in place of ``encoder_out``'s z: the network runs once
        when :attr:`z_only_shifts_output` (:meth:`rescore` gives the others), else once per code."""
        if not self.z_only_shifts_output:
            return [self(prev_output_tokens, encoder_out=dict(encoder_out, z=z))[0] for z in codes]
        first = self(prev_output_tokens, encoder_out=dict(encoder_out, z=codes[0]))[0]
        return [first] + [self.rescore(first, codes[0], z) for z in codes[1:]]

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
        """Zero z's projections onto the embeddings and the output states: the decoder then
        computes what it would without z (a memory position, if any, still takes part in
        attention)."""
        for name in ("latent_to_embedding", "latent_to_output"):
            projection = getattr(self, name, None)
            if projection is not None:
                nn.init.zeros_(projection.weight)
                nn.init.zeros_(projection.bias)

    def latent_features(self, z: Tensor) -> Tensor:
        """z in the output layer's input space (the conditional VAEs' bag-of-words head)."""
        return self.bag_of_words(z)
