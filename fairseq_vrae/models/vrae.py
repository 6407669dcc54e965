"""The ``vrae`` model: RNN encoder -> diagonal Gaussian q(z|x) -> RNN decoder given z."""

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch.nn as nn
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import (
    FairseqEncoderDecoderModel,
    register_model,
    register_model_architecture,
)
from fairseq.utils import safe_getattr, safe_hasattr

from .vrae_decoder import VRAEDecoder
from .vrae_encoder import VRAEEncoder
from .warm_start import load_pretrained_lm, pretrained_decoder_field, pretrained_encoder_embed_field

logger = logging.getLogger(__name__)

RNN_CELL_CHOICES = ChoiceEnum(["lstm", "gru"])
BRIDGE_CHOICES = ChoiceEnum(["tanh", "linear"])


@dataclass
class VRAEConfig(FairseqDataclass):
    embed_dim: int = field(default=256, metadata={"help": "word embedding size"})
    encoder_cell: RNN_CELL_CHOICES = field(default="lstm", metadata={"help": "encoder RNN cell"})
    encoder_hidden_size: int = field(default=256, metadata={"help": "encoder hidden size"})
    encoder_layers: int = field(default=1, metadata={"help": "encoder RNN layers"})
    encoder_bidirectional: bool = field(
        default=False, metadata={"help": "read the sentence in both directions"}
    )
    latent_dim: int = field(default=32, metadata={"help": "size of the latent code z"})
    posterior_bn_gamma: float = field(
        default=0.0,
        metadata={"help": "BN-VAE (Zhu et al. 2020): batch-normalise the posterior means "
                  "with this fixed scale (and a learned shift), which keeps the KL above "
                  "latent_dim * gamma^2 / 2 per sentence; 0 = off (0.6 in the paper)"},
    )
    decoder_cell: RNN_CELL_CHOICES = field(default="lstm", metadata={"help": "decoder RNN cell"})
    decoder_hidden_size: int = field(default=256, metadata={"help": "decoder hidden size"})
    decoder_layers: int = field(default=1, metadata={"help": "decoder RNN layers"})
    decoder_latent_input: bool = field(
        default=False,
        metadata={"help": "also concatenate z to every decoder input embedding"},
    )
    decoder_bridge: BRIDGE_CHOICES = field(
        default="tanh",
        metadata={"help": "z to the decoder's initial state: tanh (h0 = tanh(W z + b), and c0 = W z + b "
                  "for an LSTM, as He et al. 2019) or linear (h0 = W z + b, and c0 the same)"},
    )
    decoder_latent_zero_init: bool = field(
        default=False,
        metadata={"help": "start z's paths into the decoder (the initial-state bridge and, with "
                  "--decoder-latent-input, z's input weights) at zero, so training begins from "
                  "a plain RNN language model rather than one reading posterior noise"},
    )
    dropout: float = field(default=0.1, metadata={"help": "default for both dropouts"})
    dropout_in: Optional[float] = field(
        default=None, metadata={"help": "dropout on embeddings (default: --dropout)"}
    )
    dropout_out: Optional[float] = field(
        default=None,
        metadata={"help": "dropout on RNN outputs and between layers (default: --dropout)"},
    )
    encoder_dropout_in: Optional[float] = field(
        default=None, metadata={"help": "dropout on the encoder's embeddings (default: --dropout-in)"}
    )
    encoder_dropout_out: Optional[float] = field(
        default=None, metadata={"help": "dropout on the encoder's summary and between its layers "
                                "(default: --dropout-out)"}
    )
    decoder_dropout_in: Optional[float] = field(
        default=None, metadata={"help": "dropout on the decoder's embeddings (default: --dropout-in)"}
    )
    decoder_dropout_out: Optional[float] = field(
        default=None, metadata={"help": "dropout on the decoder's RNN outputs and between its layers "
                                "(default: --dropout-out)"}
    )
    load_pretrained_decoder_from: Optional[str] = pretrained_decoder_field()
    load_pretrained_encoder_embed: bool = pretrained_encoder_embed_field()
    share_embeddings: bool = field(
        default=False, metadata={"help": "encoder and decoder share one word embedding"}
    )
    tie_output_embeddings: bool = field(
        default=False,
        metadata={"help": "decoder output layer reuses the decoder input embedding"},
    )
    max_target_positions: int = field(
        default=1024, metadata={"help": "longest sentence the decoder generates"}
    )


def _dropouts(cfg, side: str):
    """(in, out) dropout of one side: --{side}-dropout-in/out, else --dropout-in/out,
    else --dropout (fairseq's lstm names them the same way)."""
    base = safe_getattr(cfg, "dropout", 0.1)

    def first_set(*names):
        for name in names:
            value = safe_getattr(cfg, name, None)
            if value is not None:
                return value
        return base

    return (first_set(f"{side}_dropout_in", "dropout_in"), first_set(f"{side}_dropout_out", "dropout_out"))


@register_model("vrae", dataclass=VRAEConfig)
class VRAEModel(FairseqEncoderDecoderModel):
    """Sentence VAE of Bowman et al. (2015), "Generating Sentences from a Continuous Space".

    ``forward`` returns the decoder's logits and an extra dict that also carries the
    posterior (``mu``, ``logvar``) and the code ``z`` the decoder was given.
    """

    @classmethod
    def build_model(cls, cfg, task):
        vrae_lstm(cfg)
        source_dictionary, target_dictionary = task.source_dictionary, task.target_dictionary
        encoder_dropout_in, encoder_dropout_out = _dropouts(cfg, "encoder")
        decoder_dropout_in, decoder_dropout_out = _dropouts(cfg, "decoder")
        if cfg.share_embeddings and source_dictionary.symbols != target_dictionary.symbols:
            raise ValueError(
                "--share-embeddings needs one dictionary for both sides; binarize the pair "
                "with fairseq-preprocess --joined-dictionary"
            )

        def embedding(dictionary):
            return nn.Embedding(len(dictionary), cfg.embed_dim, padding_idx=dictionary.pad())

        encoder_embed = embedding(source_dictionary)
        decoder_embed = encoder_embed if cfg.share_embeddings else embedding(target_dictionary)
        encoder = VRAEEncoder(
            source_dictionary,
            encoder_embed,
            cell=cfg.encoder_cell,
            hidden_size=cfg.encoder_hidden_size,
            num_layers=cfg.encoder_layers,
            bidirectional=cfg.encoder_bidirectional,
            latent_dim=cfg.latent_dim,
            dropout_in=encoder_dropout_in,
            dropout_out=encoder_dropout_out,
            posterior_bn_gamma=cfg.posterior_bn_gamma,
        )
        decoder = VRAEDecoder(
            target_dictionary,
            decoder_embed,
            cell=cfg.decoder_cell,
            hidden_size=cfg.decoder_hidden_size,
            num_layers=cfg.decoder_layers,
            latent_dim=cfg.latent_dim,
            latent_input=cfg.decoder_latent_input,
            latent_zero_init=safe_getattr(cfg, "decoder_latent_zero_init", False),
            bridge=str(safe_getattr(cfg, "decoder_bridge", "tanh")),
            dropout_in=decoder_dropout_in,
            dropout_out=decoder_dropout_out,
            tie_output_embeddings=cfg.tie_output_embeddings,
            max_target_positions=cfg.max_target_positions,
        )
        return cls.warm_started(cls(encoder, decoder), cfg)

    # the fairseq LM family whose checkpoints --load-pretrained-decoder-from takes
    warm_start_family, warm_start_arch = "lstm", "vrae_lstm"

    @classmethod
    def warm_started(cls, model, cfg):
        """``model`` with its decoder from ``--load-pretrained-decoder-from``, if set (the
        ``vrae_lm`` task drops the option when it rebuilds a saved model, whose weights
        the checkpoint holds)."""
        load_pretrained_lm(model, cfg)
        return model

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        checkpoint_file: str = "checkpoint_best.pt",
        data_name_or_path: str = ".",
        **kwargs,
    ):
        """Load a trained checkpoint as a :class:`VRAEHubInterface`.

        ``model_name_or_path`` is the folder holding ``checkpoint_file``;
        ``data_name_or_path`` the folder with the ``dict.txt`` it was trained with
        (relative to the model folder when it starts with "."). Other keywords
        override the saved configuration, e.g. ``tokenizer="moses"``.
        """
        from fairseq import hub_utils

        from ..hub_interface import VRAEHubInterface

        loaded = hub_utils.from_pretrained(
            model_name_or_path, checkpoint_file, data_name_or_path, archive_map=cls.hub_models(), **kwargs
        )
        return VRAEHubInterface(loaded["args"], loaded["task"], loaded["models"])

    def forward(self, src_tokens, src_lengths, prev_output_tokens, sample_posterior: bool = True, **kwargs):
        """Logits, and the decoder's extra output merged with the latent contract
        (``z``, ``mu``, ``logvar``, ``prior_mu``, ``prior_logvar``)."""
        latent = self.encoder(src_tokens, src_lengths=src_lengths, sample_posterior=sample_posterior)
        logits, extra = self.decoder(prev_output_tokens, encoder_out=latent)
        return logits, dict(extra, **latent)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        key = "encoder.embed_tokens.weight"
        if key in state_dict:
            expected = self.encoder.embed_tokens.weight.size(0)
            found = state_dict[key].size(0)
            if found != expected:
                raise ValueError(
                    f"dictionary mismatch: the checkpoint was trained with a dictionary of "
                    f"{found} entries, but the dictionary of the data has {expected}; "
                    f"use the dict.txt the model was trained with"
                )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


# Architectures only fill in defaults (fairseq/models/lstm_lm.py style).


def fill_defaults(cfg, config_class, keep_none=()) -> None:
    """Give every option of ``config_class`` not set in ``cfg`` its dataclass default
    (options named in ``keep_none`` may stay None: they default to another option)."""
    defaults = config_class()
    for name in config_class.__dataclass_fields__:
        if name not in keep_none and (not safe_hasattr(cfg, name) or safe_getattr(cfg, name) is None):
            setattr(cfg, name, getattr(defaults, name))


@register_model_architecture("vrae", "vrae_lstm")
def vrae_lstm(cfg):
    """Li et al. (2019) Penn Treebank sizes: 256-d embeddings and LSTMs, 32-d z."""
    fill_defaults(cfg, VRAEConfig, keep_none=(
        "dropout_in", "dropout_out", "encoder_dropout_in", "encoder_dropout_out",
        "decoder_dropout_in", "decoder_dropout_out"))


@register_model_architecture("vrae", "vrae_lstm_big")
def vrae_lstm_big(cfg):
    """He et al. (2019) Yahoo/Yelp sizes: 512-d embeddings, 1024-d LSTMs, 32-d z."""
    cfg.embed_dim = safe_getattr(cfg, "embed_dim", 512)
    cfg.encoder_hidden_size = safe_getattr(cfg, "encoder_hidden_size", 1024)
    cfg.decoder_hidden_size = safe_getattr(cfg, "decoder_hidden_size", 1024)
    cfg.decoder_latent_input = safe_getattr(cfg, "decoder_latent_input", True)
    vrae_lstm(cfg)


@register_model_architecture("vrae", "vrae_gru")
def vrae_gru(cfg):
    """Bowman-style model with GRU cells (as in common public re-implementations)."""
    cfg.encoder_cell = safe_getattr(cfg, "encoder_cell", "gru")
    cfg.decoder_cell = safe_getattr(cfg, "decoder_cell", "gru")
    vrae_lstm(cfg)
