"""The ``vrae_transformer`` model: fairseq's Transformer encoder -> pooled summary ->
the shared latent layer -> fairseq's Transformer decoder conditioned on z.

z reaches the decoder in one or both of the ways of Optimus (Li et al. 2020):
``embedding`` adds a projection of z to every input embedding; ``memory`` makes a
projection of z an extra position that every layer's self-attention can attend to
(fairseq's ``cross_self_attention`` with the memory as the "encoder output", so the
memory's keys and values live in the incremental state and follow beam reordering).
``output`` adds a projection of z to the states the output layer reads.
"""

from dataclasses import dataclass, field
from typing import Optional

import torch.nn as nn
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerDecoderBase, TransformerEncoderBase
from fairseq.utils import safe_getattr
from torch import Tensor

from .latent import LatentLayer
from .latent_encoder import LatentEncoder
from .latent_injection import LATENT_INJECTION_CHOICES, LatentPathsMixin, LatentShiftedEmbedding, injection_paths
from .vrae import VRAEModel, fill_defaults
from .warm_start import pretrained_decoder_field, pretrained_encoder_embed_field

LATENT_INJECTIONS = ChoiceEnum(LATENT_INJECTION_CHOICES)


@dataclass
class VRAETransformerConfig(FairseqDataclass):
    embed_dim: int = field(default=256, metadata={"help": "embedding and model size of both networks"})
    ffn_embed_dim: int = field(default=1024, metadata={"help": "feed-forward size"})
    attention_heads: int = field(default=4, metadata={"help": "attention heads"})
    encoder_layers: int = field(default=2, metadata={"help": "encoder layers"})
    decoder_layers: int = field(default=2, metadata={"help": "decoder layers"})
    normalize_before: bool = field(default=False, metadata={"help": "pre-norm layers (as --decoder-normalize-before)"})
    latent_dim: int = field(default=32, metadata={"help": "size of the latent code z"})
    latent_injection: LATENT_INJECTIONS = field(
        default="both", metadata={"help": "how z reaches the decoder: added to the input embeddings, "
                                  "as a self-attention memory position, both, added to the output "
                                  "layer's input states (output), or embedding+output"}
    )
    posterior_bn_gamma: float = field(
        default=0.0, metadata={"help": "BN-VAE scale of the posterior means (see vrae_lstm); 0 = off"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    share_embeddings: bool = field(default=False, metadata={"help": "encoder and decoder share one word embedding"})
    share_decoder_input_output_embed: bool = field(
        default=True, metadata={"help": "decoder output layer reuses its input embedding (as transformer_lm)"}
    )
    max_positions: int = field(default=512, metadata={"help": "longest sentence either network reads"})
    load_pretrained_decoder_from: Optional[str] = pretrained_decoder_field()
    load_pretrained_encoder_embed: bool = pretrained_encoder_embed_field()


def transformer_config(cfg) -> TransformerConfig:
    """fairseq's TransformerConfig for both networks from this model's options."""
    tcfg = TransformerConfig()
    for side in (tcfg.encoder, tcfg.decoder):
        side.embed_dim = cfg.embed_dim
        side.ffn_embed_dim = cfg.ffn_embed_dim
        side.attention_heads = cfg.attention_heads
        side.normalize_before = cfg.normalize_before
    tcfg.encoder.layers, tcfg.decoder.layers = cfg.encoder_layers, cfg.decoder_layers
    tcfg.decoder.input_dim = tcfg.decoder.output_dim = cfg.embed_dim
    tcfg.dropout, tcfg.attention_dropout = cfg.dropout, cfg.attention_dropout
    tcfg.activation_dropout = cfg.activation_dropout
    tcfg.max_source_positions = tcfg.max_target_positions = cfg.max_positions
    tcfg.share_decoder_input_output_embed = cfg.share_decoder_input_output_embed
    tcfg.cross_self_attention = "memory" in injection_paths(str(cfg.latent_injection))
    return tcfg


def shifted_embedding(dictionary, dim: int) -> LatentShiftedEmbedding:
    """A word embedding initialised as fairseq's Transformer initialises its own."""
    embedding = LatentShiftedEmbedding(len(dictionary), dim, padding_idx=dictionary.pad())
    nn.init.normal_(embedding.weight, mean=0, std=dim**-0.5)
    nn.init.constant_(embedding.weight[dictionary.pad()], 0)
    return embedding


class VRAETransformerEncoder(LatentEncoder):
    """fairseq's TransformerEncoder, mean-pooled over the non-pad positions, into the
    latent layer; returns the latent output contract (see :mod:`.latent`)."""

    def __init__(self, tcfg: TransformerConfig, dictionary, embed_tokens: nn.Embedding, latent_dim: int,
                 posterior_bn_gamma: float = 0.0):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.transformer = TransformerEncoderBase(tcfg, dictionary, embed_tokens)
        freeze_fused_kernel_copies(self.transformer)
        self.latent_dim = latent_dim
        self.latent = LatentLayer(tcfg.encoder.embed_dim, latent_dim, posterior_bn_gamma=posterior_bn_gamma)

    def summarize(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None) -> Tensor:
        out = self.transformer(src_tokens, src_lengths=src_lengths)
        states = out["encoder_out"][0].transpose(0, 1)  # B x T x C
        keep = src_tokens.ne(self.dictionary.pad()).unsqueeze(-1).to(states.dtype)
        return (states * keep).sum(1) / keep.sum(1).clamp(min=1)

    def max_positions(self) -> int:
        return self.transformer.max_positions()


class VRAETransformerDecoder(LatentPathsMixin, TransformerDecoderBase):
    """fairseq's TransformerDecoder without cross-attention, conditioned on ``encoder_out["z"]``."""

    def __init__(self, tcfg: TransformerConfig, dictionary, embed_tokens: LatentShiftedEmbedding,
                 latent_dim: int, injection: str):
        super().__init__(tcfg, dictionary, embed_tokens, no_encoder_attn=True)
        self.injection = injection
        dim = tcfg.decoder.embed_dim
        self.add_latent_paths(latent_dim, injection, dim, dim, output_dim=tcfg.decoder.output_dim)

    def output_layer(self, features):
        return super().output_layer(self.output_shifted(features))

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        if encoder_out is None or "z" not in encoder_out:
            raise ValueError("the vrae_transformer decoder needs a latent code (encoder_out['z'])")
        z = encoder_out["z"]
        memory = {"encoder_out": [], "encoder_padding_mask": []}
        if self.latent_to_memory is not None:
            memory["encoder_out"] = [self.latent_to_memory(z).unsqueeze(0)]  # 1 x B x C
        with self.embeddings_shifted_by(z, self.embed_scale):
            return super().forward(prev_output_tokens, encoder_out=memory, incremental_state=incremental_state, **kwargs)


FUSED_KERNEL_COPIES = ("in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias",
                       "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")


def freeze_fused_kernel_copies(encoder: TransformerEncoderBase) -> None:
    """fairseq 0.12.2's encoder layers keep copies of their weights for torch's fused
    inference kernel, which training never uses (and which compat keeps off); frozen,
    they take no gradient, so DDP needs no --find-unused-parameters."""
    for layer in encoder.layers:
        for name in FUSED_KERNEL_COPIES:
            parameter = getattr(layer, name, None)
            if isinstance(parameter, nn.Parameter):
                parameter.requires_grad_(False)


@register_model("vrae_transformer", dataclass=VRAETransformerConfig)
class VRAETransformerModel(VRAEModel):
    """Sentence VAE with Transformer networks; the latent machinery, forward, hub
    interface and checkpoint checks are those of :class:`VRAEModel`."""

    @classmethod
    def build_model(cls, cfg, task):
        vrae_transformer(cfg)
        source_dictionary, target_dictionary = task.source_dictionary, task.target_dictionary
        if cfg.share_embeddings and source_dictionary.symbols != target_dictionary.symbols:
            raise ValueError("--share-embeddings needs one dictionary for both sides (fairseq-preprocess --joined-dictionary)")
        tcfg = transformer_config(cfg)
        encoder_embed = shifted_embedding(source_dictionary, cfg.embed_dim)
        decoder_embed = encoder_embed if cfg.share_embeddings else shifted_embedding(target_dictionary, cfg.embed_dim)
        encoder = VRAETransformerEncoder(tcfg, source_dictionary, encoder_embed, cfg.latent_dim, cfg.posterior_bn_gamma)
        decoder = VRAETransformerDecoder(tcfg, target_dictionary, decoder_embed, cfg.latent_dim, str(cfg.latent_injection))
        return cls.warm_started(cls(encoder, decoder), cfg)

    warm_start_family, warm_start_arch = "transformer", "vrae_transformer"

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())


# Architectures only fill in defaults.  ``--arch vrae_transformer`` is the model's own
# name (registered by fairseq with the dataclass): the small CPU size below.


def vrae_transformer(cfg):
    """A small size for CPUs: 2 + 2 layers of 256 with 4 heads, FFN 1024, 32-d z."""
    fill_defaults(cfg, VRAETransformerConfig)


@register_model_architecture("vrae_transformer", "vrae_transformer_big")
def vrae_transformer_big(cfg):
    """transformer_lm-base-like networks: 6 + 6 layers of 512 with 8 heads, FFN 2048."""
    cfg.embed_dim = safe_getattr(cfg, "embed_dim", 512)
    cfg.ffn_embed_dim = safe_getattr(cfg, "ffn_embed_dim", 2048)
    cfg.attention_heads = safe_getattr(cfg, "attention_heads", 8)
    cfg.encoder_layers = safe_getattr(cfg, "encoder_layers", 6)
    cfg.decoder_layers = safe_getattr(cfg, "decoder_layers", 6)
    vrae_transformer(cfg)
