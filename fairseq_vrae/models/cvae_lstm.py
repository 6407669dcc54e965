"""``cvae_lstm``: fairseq's attentional ``lstm`` for translation with a latent z (see
:mod:`.cvae`).  Every option of ``--arch lstm`` keeps its meaning; the model adds the
latent options.  z reaches the decoder as a projection added to its input embeddings
and/or as one extra source position its attention reads.
"""

from typing import Dict

import torch.nn as nn
from fairseq import utils
from fairseq.models import register_model, register_model_architecture
from fairseq.models.lstm import LSTMDecoder, LSTMEncoder, LSTMModel
from fairseq.models.lstm import base_architecture as lstm_base_architecture
from torch import Tensor

from .cvae import CVAEEncoder, CVAEModelMixin, add_latent_args, check_embedding_options, latent_defaults, masked_mean
from .latent_injection import LatentPathsMixin, LatentShiftedEmbedding, injection_paths
from .warm_start import load_pretrained_translation


def shifted_embedding(dictionary, dim: int) -> LatentShiftedEmbedding:
    """A word embedding initialised as fairseq's LSTM model initialises its own."""
    embedding = LatentShiftedEmbedding(len(dictionary), dim, padding_idx=dictionary.pad())
    nn.init.uniform_(embedding.weight, -0.1, 0.1)
    nn.init.constant_(embedding.weight[dictionary.pad()], 0)
    return embedding


class CVAELSTMEncoder(CVAEEncoder):
    """fairseq's LSTMEncoder on the source; another (``--posterior-encoder-layers``,
    sharing the decoder's embedding) on the target for q(z|x, y); both mean-pooled."""

    def __init__(self, args, src_dict, tgt_dict, encoder_embed, decoder_embed, max_source_positions: int):
        lstm_args = dict(
            hidden_size=args.encoder_hidden_size,
            dropout_in=args.encoder_dropout_in,
            dropout_out=args.encoder_dropout_out,
        )
        output_units = args.encoder_hidden_size * (2 if args.encoder_bidirectional else 1)
        super().__init__(src_dict, output_units, args.encoder_hidden_size, args.latent_dim,
                         args.prior_hidden_dim, args.posterior_bn_gamma,
                         args.prior_slot_scale)
        self.lstm = LSTMEncoder(
            src_dict, embed_dim=args.encoder_embed_dim, num_layers=args.encoder_layers,
            bidirectional=args.encoder_bidirectional, pretrained_embed=encoder_embed,
            max_source_positions=max_source_positions, **lstm_args,
        )
        self.target_reader = LSTMEncoder(
            tgt_dict, embed_dim=args.decoder_embed_dim, num_layers=args.posterior_encoder_layers,
            left_pad=False, pretrained_embed=decoder_embed, **lstm_args,
        )
        self.output_units = output_units

    @property
    def source_network(self):
        """fairseq's encoder inside (what an lstm checkpoint's encoder.* fills)."""
        return self.lstm

    def encode_source(self, src_tokens, src_lengths):
        source = self.lstm(src_tokens, src_lengths, enforce_sorted=False)
        states, padding_mask = source[0], source[3]  # T x B x C, T x B
        return source, masked_mean(states, padding_mask.t())

    def summarize_target(self, target_tokens: Tensor) -> Tensor:
        lengths = target_tokens.ne(self.target_reader.padding_idx).long().sum(1)
        states, _, _, padding_mask = self.target_reader(target_tokens, lengths, enforce_sorted=False)
        return masked_mean(states, padding_mask.t())

    def reorder_source(self, source, new_order):
        return self.lstm.reorder_encoder_out(source, new_order)

    def max_positions(self):
        return self.lstm.max_positions()


class CVAELSTMDecoder(LatentPathsMixin, LSTMDecoder):
    """fairseq's attentional LSTMDecoder, given z."""

    def __init__(self, latent_dim: int, injection: str, bow_head: str = "shared", **kwargs):
        super().__init__(**kwargs)
        embed_dim = self.embed_tokens.embedding_dim
        if "memory" in injection_paths(injection) and self.attention is None:
            raise ValueError("--latent-injection memory needs the decoder's attention (--decoder-attention 1)")
        output_dim = embed_dim if self.share_input_output_embed else self.fc_out.in_features
        self.add_latent_paths(latent_dim, injection, embed_dim, self.encoder_output_units,
                              bow_dim=output_dim, bow_head=bow_head, vocab_size=len(self.dictionary),
                              output_dim=output_dim)

    def output_layer(self, x):
        return super().output_layer(self.output_shifted(x))

    def forward(self, prev_output_tokens, encoder_out: Dict = None, incremental_state=None, **kwargs):
        if encoder_out is None or "z" not in encoder_out:
            raise ValueError("the cvae_lstm decoder needs the encoder's output with a latent code")
        z = encoder_out["z"]
        states, hiddens, cells, padding_mask = encoder_out["source"]
        if self.latent_to_memory is not None:
            states, padding_mask = self.append_memory_position(z, states, padding_mask, mask_time_dim=0)
        with self.embeddings_shifted_by(z):
            return super().forward(prev_output_tokens, encoder_out=(states, hiddens, cells, padding_mask),
                                   incremental_state=incremental_state)


@register_model("cvae_lstm")
class CVAELSTMModel(CVAEModelMixin, LSTMModel):
    """Conditional VAE with fairseq's attentional LSTM networks (``--arch cvae_lstm``)."""

    @staticmethod
    def add_args(parser):
        LSTMModel.add_args(parser)
        add_latent_args(parser)

    @classmethod
    def build_model(cls, args, task):
        cvae_lstm(args)
        if args.encoder_layers != args.decoder_layers:
            raise ValueError("--encoder-layers must match --decoder-layers (the decoder starts from the encoder's states)")
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        check_embedding_options(args, src_dict, tgt_dict, "cvae_lstm")
        encoder_embed = shifted_embedding(src_dict, args.encoder_embed_dim)
        decoder_embed = encoder_embed if args.share_all_embeddings else shifted_embedding(tgt_dict, args.decoder_embed_dim)
        max_source_positions = getattr(args, "max_source_positions", None) or 1e5
        max_target_positions = getattr(args, "max_target_positions", None) or 1e5
        encoder = CVAELSTMEncoder(args, src_dict, tgt_dict, encoder_embed, decoder_embed, max_source_positions)
        decoder = CVAELSTMDecoder(
            args.latent_dim, args.latent_injection, args.bow_head,
            dictionary=tgt_dict, embed_dim=args.decoder_embed_dim, hidden_size=args.decoder_hidden_size,
            out_embed_dim=args.decoder_out_embed_dim, num_layers=args.decoder_layers,
            dropout_in=args.decoder_dropout_in, dropout_out=args.decoder_dropout_out,
            attention=utils.eval_bool(args.decoder_attention), encoder_output_units=encoder.output_units,
            pretrained_embed=decoder_embed, share_input_output_embed=args.share_decoder_input_output_embed,
            max_target_positions=max_target_positions,
        )
        return load_pretrained_translation(cls(encoder, decoder), args)

    warm_start_base, warm_start_family, warm_start_arch = LSTMModel, "lstm", "cvae_lstm"


@register_model_architecture("cvae_lstm", "cvae_lstm")
def cvae_lstm(args):
    """fairseq's ``lstm`` defaults (512-d, one layer, attention) and a 32-d z."""
    latent_defaults(args)
    lstm_base_architecture(args)
