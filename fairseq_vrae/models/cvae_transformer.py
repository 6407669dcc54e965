"""``cvae_transformer``: fairseq's ``transformer`` for translation with a latent z
(see :mod:`.cvae`).  Every option of ``--arch transformer`` keeps its meaning; the model
adds the latent options, so swapping ``--arch transformer`` for ``--arch
cvae_transformer`` (and the criterion for ``vrae_elbo``) is the whole change.

z reaches the decoder as in ``vrae_transformer``: a projection added to every input
embedding (``embedding``), one extra source position that the decoder's
encoder-attention reads (``memory``), whose keys and values fairseq caches and reorders
with the rest of the incremental state, and/or a projection added to the states the
output layer reads (``output``).
"""

import copy
from typing import Dict

from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
)
from fairseq.models.transformer.transformer_legacy import base_architecture
from torch import Tensor

from .cvae import CVAEEncoder, CVAEModelMixin, add_latent_args, check_embedding_options, latent_defaults, masked_mean
from .warm_start import load_pretrained_translation
from .latent_injection import LatentPathsMixin, LatentShiftedEmbedding
from .vrae_transformer import freeze_fused_kernel_copies, shifted_embedding


class CVAETransformerEncoder(CVAEEncoder):
    """fairseq's TransformerEncoder on the source; a shallower one (sharing the
    decoder's embedding) on the target for q(z|x, y); both mean-pooled."""

    def __init__(self, cfg: TransformerConfig, args, src_dict, tgt_dict, encoder_embed, decoder_embed):
        dim = cfg.encoder.embed_dim
        super().__init__(src_dict, dim, dim, args.latent_dim, args.prior_hidden_dim, args.posterior_bn_gamma,
                         args.prior_slot_scale)
        self.transformer = TransformerEncoderBase(cfg, src_dict, encoder_embed)
        reader_cfg = copy.deepcopy(cfg)
        reader_cfg.encoder.layers = args.posterior_encoder_layers
        reader_cfg.encoder.layers_to_keep = None
        reader_cfg.max_source_positions = cfg.max_target_positions
        self.target_reader = TransformerEncoderBase(reader_cfg, tgt_dict, decoder_embed)
        for encoder in (self.transformer, self.target_reader):
            freeze_fused_kernel_copies(encoder)

    @property
    def source_network(self):
        """fairseq's encoder inside (what a transformer checkpoint's encoder.* fills)."""
        return self.transformer

    def encode_source(self, src_tokens, src_lengths):
        out = self.transformer(src_tokens, src_lengths=src_lengths)
        return out, masked_mean(out["encoder_out"][0], out["encoder_padding_mask"][0])

    def summarize_target(self, target_tokens: Tensor) -> Tensor:
        out = self.target_reader(target_tokens)
        return masked_mean(out["encoder_out"][0], out["encoder_padding_mask"][0])

    def reorder_source(self, source, new_order):
        return self.transformer.reorder_encoder_out(source, new_order)

    def max_positions(self):
        return self.transformer.max_positions()


class CVAETransformerDecoder(LatentPathsMixin, TransformerDecoderBase):
    """fairseq's TransformerDecoder (with encoder-attention), given z."""

    def __init__(self, cfg: TransformerConfig, dictionary, embed_tokens: LatentShiftedEmbedding,
                 latent_dim: int, injection: str, bow_head: str = "shared"):
        super().__init__(cfg, dictionary, embed_tokens)
        self.add_latent_paths(latent_dim, injection, cfg.decoder.embed_dim, cfg.encoder.embed_dim,
                              bow_dim=cfg.decoder.output_dim, bow_head=bow_head, vocab_size=len(dictionary),
                              output_dim=cfg.decoder.output_dim)

    def output_layer(self, features):
        return super().output_layer(self.output_shifted(features))

    def forward(self, prev_output_tokens, encoder_out: Dict = None, incremental_state=None, **kwargs):
        if encoder_out is None or "z" not in encoder_out:
            raise ValueError("the cvae_transformer decoder needs the encoder's output with a latent code")
        z, source = encoder_out["z"], dict(encoder_out["source"])
        if self.latent_to_memory is not None:
            states, mask = self.append_memory_position(
                z, source["encoder_out"][0], source["encoder_padding_mask"][0], mask_time_dim=1)
            source["encoder_out"], source["encoder_padding_mask"] = [states], [mask]
        with self.embeddings_shifted_by(z, self.embed_scale):
            return super().forward(prev_output_tokens, encoder_out=source, incremental_state=incremental_state, **kwargs)


@register_model("cvae_transformer")
class CVAETransformerModel(CVAEModelMixin, TransformerModel):
    """Conditional VAE with fairseq's Transformer networks (``--arch cvae_transformer``)."""

    @classmethod
    def add_args(cls, parser):
        TransformerModel.add_args(parser)
        add_latent_args(parser)

    @classmethod
    def build_model(cls, args, task):
        cvae_transformer(args)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        check_embedding_options(args, src_dict, tgt_dict, "cvae_transformer")
        if args.share_all_embeddings:
            args.share_decoder_input_output_embed = True
        cfg = TransformerConfig.from_namespace(args)
        encoder_embed = shifted_embedding(src_dict, cfg.encoder.embed_dim)
        decoder_embed = encoder_embed if args.share_all_embeddings else shifted_embedding(tgt_dict, cfg.decoder.embed_dim)
        encoder = CVAETransformerEncoder(cfg, args, src_dict, tgt_dict, encoder_embed, decoder_embed)
        decoder = CVAETransformerDecoder(cfg, tgt_dict, decoder_embed, args.latent_dim, args.latent_injection,
                                         args.bow_head)
        return load_pretrained_translation(cls(args, encoder, decoder), args)

    warm_start_base, warm_start_family, warm_start_arch = TransformerModel, "transformer", "cvae_transformer"


# Architectures only fill in defaults.


@register_model_architecture("cvae_transformer", "cvae_transformer")
def cvae_transformer(args):
    """The translation bench's size: 3 + 3 layers of 256, 4 heads, FFN 512, 32-d z."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 256)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 512)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.encoder_layers = getattr(args, "encoder_layers", 3)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", args.encoder_embed_dim)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", args.encoder_ffn_embed_dim)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    args.decoder_layers = getattr(args, "decoder_layers", 3)
    latent_defaults(args)
    base_architecture(args)


@register_model_architecture("cvae_transformer", "cvae_transformer_iwslt_de_en")
def cvae_transformer_iwslt_de_en(args):
    """fairseq's transformer_iwslt_de_en sizes: 6 + 6 layers of 512, 4 heads, FFN 1024."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 1024)
    args.encoder_layers = getattr(args, "encoder_layers", 6)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 1024)
    cvae_transformer(args)
