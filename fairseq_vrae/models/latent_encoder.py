"""The inference network's shape, shared by the sentence VAEs: a network summarises the
sentence in one vector (``summarize``), the latent layer turns it into the output
contract of z (see :mod:`.latent`).  A new encoder family subclasses
:class:`LatentEncoder`, builds ``self.latent`` and writes ``summarize``."""

from typing import Dict, Optional

from fairseq.models import FairseqEncoder
from torch import Tensor

from .latent import reorder_latent, without_dropout


class LatentEncoder(FairseqEncoder):
    """``forward`` returns the latent layer's contract: ``z`` a reparameterised posterior
    sample when ``sample_posterior`` (training, ELBO evaluation), else the posterior mean;
    ``latent`` given skips the network and wraps that code (prior samples, interpolation)."""

    def summarize(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, latent: Optional[Tensor] = None,
                sample_posterior: bool = True, **unused) -> Dict[str, Tensor]:
        if latent is not None:
            return self.latent.given(latent)
        return self.latent(self.summarize(src_tokens, src_lengths), sample=sample_posterior,
                           clean_summary=without_dropout(self, lambda: self.summarize(src_tokens, src_lengths)))

    def reorder_encoder_out(self, encoder_out: Dict[str, Tensor], new_order: Tensor):
        return reorder_latent(encoder_out, new_order)
