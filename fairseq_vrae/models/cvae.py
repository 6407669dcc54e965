"""Conditional VAE for translation (Sohn et al. 2015; Zhang et al. 2016, VNMT): the
pieces shared by ``cvae_transformer`` and ``cvae_lstm``.

The model is p(y|x) = E_{p(z|x)} p(y|x, z) with a learned prior p(z|x) read from the
pooled source encoding, a recognition network q(z|x, y) reading the pooled source and
a pooled encoding of the target, and a decoder that attends to the source and receives
z.  The encoder's output is the latent contract of :mod:`.latent` (``z``, ``mu``,
``logvar``, ``prior_mu``, ``prior_logvar``) plus ``source`` (the family's own encoder
output, which the decoder attends to) and ``condition`` (the pooled source).

Which z the encoder hands over:

* training and evaluation (the model's ``forward``, the IW bound): q(z|x, y), read
  from ``posterior_tokens`` (the target as ``prev_output_tokens``: ``</s> y1 .. yn``);
* ``latent_codes`` given: those codes; ``latent_seeds`` given: one draw of p(z|x) per
  row, fixed by its seed (the ``latent_translation`` task's prior samples);
* otherwise (fairseq-generate under the stock ``translation`` task): the prior mean,
  so plain translation is deterministic.
"""

from typing import Dict, Optional

import torch
from fairseq.models import FairseqEncoder
from torch import Tensor

from .latent import ConditionalGaussianPrior, LatentLayer, reorder_latent, without_dropout
from .latent_injection import LATENT_INJECTION_CHOICES


def masked_mean(states: Tensor, padding_mask: Tensor) -> Tensor:
    """Mean over the non-pad positions of ``states`` (T x B x C; mask B x T, True = pad)."""
    keep = (~padding_mask).t().unsqueeze(-1).to(states.dtype)
    return (states * keep).sum(0) / keep.sum(0).clamp(min=1)


class CVAEEncoder(FairseqEncoder):
    """Source encoder + target reader + the latent layer with a conditional prior.

    A family subclass provides ``encode_source`` (its encoder output and the pooled
    source), ``summarize_target`` (the pooled target), ``reorder_source`` and
    ``max_positions``.
    """

    # importance-weighted evaluation hands the target to the encoder (the proposal q(z|x, y))
    reads_target = True

    def __init__(self, dictionary, source_dim: int, target_dim: int, latent_dim: int,
                 prior_hidden_dim: Optional[int] = None, posterior_bn_gamma: float = 0.0,
                 prior_slot_scale: float = 1.0):
        super().__init__(dictionary)
        self.latent_dim = latent_dim
        if not prior_slot_scale > 0:
            raise ValueError(f"--prior-slot-scale must be > 0, got {prior_slot_scale}")
        #: the prior's fixed slots are mu(x) + prior_slot_scale * sigma(x) * e_k (vrae_elbo
        #: --prior-draw-slots trains them, --latent-mode prior-slots decodes them)
        self.prior_slot_scale = float(prior_slot_scale)
        prior = ConditionalGaussianPrior(source_dim, latent_dim, prior_hidden_dim)
        self.latent = LatentLayer(source_dim + target_dim, latent_dim, prior=prior,
                                  posterior_bn_gamma=posterior_bn_gamma)

    def encode_source(self, src_tokens: Tensor, src_lengths: Tensor):
        raise NotImplementedError

    def summarize_target(self, target_tokens: Tensor) -> Tensor:
        raise NotImplementedError

    def reorder_source(self, source, new_order: Tensor):
        raise NotImplementedError

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None,
                posterior_tokens: Optional[Tensor] = None, latent_codes: Optional[Tensor] = None,
                latent_seeds: Optional[Tensor] = None, latent_temperature: float = 1.0,
                sample_posterior: bool = True, **unused) -> Dict:
        source, condition = self.encode_source(src_tokens, src_lengths)
        if latent_seeds is not None:
            latent = self.latent.from_prior(condition, condition, seeds=latent_seeds.cpu(),
                                            temperature=latent_temperature)
        elif latent_codes is not None:
            latent = self.latent.given(latent_codes.to(condition.dtype), condition=condition)
        elif posterior_tokens is not None:
            def summarize():
                return torch.cat([self.encode_source(src_tokens, src_lengths)[1],
                                  self.summarize_target(posterior_tokens)], dim=-1)

            summary = torch.cat([condition, self.summarize_target(posterior_tokens)], dim=-1)
            latent = self.latent(summary, sample=sample_posterior, condition=condition,
                                 clean_summary=without_dropout(self, summarize))
        else:
            latent = self.latent.from_prior(condition, condition)
        return dict(latent, source=source, condition=condition)

    def reorder_encoder_out(self, encoder_out: Dict, new_order: Tensor) -> Dict:
        tensors = {key: value for key, value in encoder_out.items() if key != "source"}
        reordered = reorder_latent(tensors, new_order)
        reordered["source"] = self.reorder_source(encoder_out["source"], new_order)
        return reordered


class CVAEModelMixin:
    """forward (logits + the latent contract), the bag-of-words head and the checkpoint
    check, for encoder-decoder models whose encoder is a :class:`CVAEEncoder`."""

    def forward(self, src_tokens, src_lengths, prev_output_tokens, sample_posterior: bool = True,
                posterior_tokens=None, **kwargs):
        """Logits and the latent contract; q(z|x, y) reads ``posterior_tokens`` (default: the
        decoder's input, i.e. the target; the criterion passes the target itself when the
        decoder's input has word dropout)."""
        posterior_tokens = prev_output_tokens if posterior_tokens is None else posterior_tokens
        latent = self.encoder(src_tokens, src_lengths=src_lengths, posterior_tokens=posterior_tokens,
                              sample_posterior=sample_posterior)
        logits, extra = self.decoder(prev_output_tokens, encoder_out=latent)
        extra = extra if isinstance(extra, dict) else {"attn": extra}
        return logits, dict(extra, **{k: v for k, v in latent.items() if k != "source"})

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "checkpoint_best.pt",
                        data_name_or_path: str = ".", latent_mode: str = "prior-mean",
                        samples_per_source: int = 1, prior_temperature: float = 1.0,
                        distinct_draws: bool = False, **kwargs):
        """fairseq's hub interface (``translate``, ``sample``, ``generate``) over the
        ``latent_translation`` task, whichever task the model was trained with: with
        ``latent_mode="prior-sample"`` and ``samples_per_source=K``, ``generate`` returns
        K x beam hypotheses per source, drawn at ``prior_temperature`` (``distinct_draws``:
        ``--distinct-draws``)."""
        from fairseq import hub_utils
        from fairseq.tasks import TASK_REGISTRY
        from omegaconf import open_dict

        loaded = hub_utils.from_pretrained(
            model_name_or_path, checkpoint_file, data_name_or_path, archive_map=cls.hub_models(), **kwargs
        )
        cfg, task = loaded["args"], loaded["task"]
        with open_dict(cfg):
            cfg.task.latent_mode = latent_mode
            cfg.task.samples_per_source = samples_per_source
            cfg.task.prior_temperature = prior_temperature
            cfg.task.distinct_draws = distinct_draws
            cfg.task.seed = cfg.common.seed
        # the task by its registered name (the package registers it): models import no task
        latent_task = TASK_REGISTRY["latent_translation"](cfg.task, task.source_dictionary, task.target_dictionary)
        return hub_utils.GeneratorHubInterface(cfg, latent_task, loaded["models"])

    def bag_of_words_logits(self, latent: Dict[str, Tensor]) -> Tensor:
        """Scores over the target vocabulary from z alone (kgCVAE's bag-of-words loss,
        Zhao et al. 2017): a projection of z through the decoder's output layer, or
        with ``--bow-head own`` through an output layer of its own.  The
        criterion always computes it (weighted 0 without --bow-loss-weight), so its
        projection is in every step's graph."""
        if self.decoder.bow_head == "own":
            return self.decoder.bag_of_words(latent["z"])
        return self.decoder.output_layer(self.decoder.latent_features(latent["z"]))

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        if not any(key.startswith("encoder.latent.") for key in state_dict):
            raise ValueError(
                f"this checkpoint has no latent layer (encoder.latent.*): it was not trained "
                f"as {type(self).__name__}; translate it with --task translation instead"
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def add_latent_args(parser) -> None:
    """The latent options both CVAE families add to their network's own options."""
    parser.add_argument("--latent-dim", type=int, metavar="N", help="size of the latent code z (default 32)")
    parser.add_argument("--latent-injection", choices=LATENT_INJECTION_CHOICES,
                        help="how z reaches the decoder: added to its input embeddings, as an extra "
                             "source position its attention can read, both, added to the states its "
                             "output layer reads (output), or embedding+output (default both)")
    parser.add_argument("--posterior-encoder-layers", type=int, metavar="N",
                        help="layers of the network that reads the target for q(z|x, y) (default 1)")
    parser.add_argument("--prior-hidden-dim", type=int, metavar="N",
                        help="hidden size of the prior network p(z|x) (default: the encoder's size)")
    parser.add_argument("--posterior-bn-gamma", type=float, metavar="G",
                        help="BN-VAE scale of the posterior means (see vrae_lstm); 0 = off (default)")
    parser.add_argument("--prior-slot-scale", type=float, metavar="S",
                        help="the prior's fixed slots (vrae_elbo --prior-draw-slots, --latent-mode "
                             "prior-slots) lie at mu(x) + S * sigma(x) * e_k: S > 1 spreads the slots the "
                             "decoder trains and translates with (default 1)")
    parser.add_argument("--load-pretrained-encoder-from", metavar="PATH",
                        help="start the source encoder from this fairseq translation checkpoint (transformer "
                             "for cvae_transformer, lstm for cvae_lstm; same dictionaries and sizes)")
    parser.add_argument("--load-pretrained-decoder-from", metavar="PATH",
                        help="start the decoder from this fairseq translation checkpoint; z's paths into it "
                             "start at zero, so with both options the CVAE begins translating as that model")
    parser.add_argument("--bow-head", choices=["shared", "own"],
                        help="the bag-of-words head scores z through the decoder's output layer "
                             "(shared, the default: with --share-all-embeddings its gradient also "
                             "shapes the word embeddings) or through an output layer of its own (own)")


def check_embedding_options(args, src_dict, tgt_dict, arch: str) -> None:
    """Refuse option combinations the CVAE embeddings cannot honour, saying why."""
    for name in ("encoder_embed_path", "decoder_embed_path"):
        if getattr(args, name, None):
            raise ValueError(f"--{name.replace('_', '-')} is not supported by {arch}")
    if args.share_all_embeddings:
        if src_dict != tgt_dict:
            raise ValueError("--share-all-embeddings needs a joined dictionary (fairseq-preprocess --joined-dictionary)")
        if args.encoder_embed_dim != args.decoder_embed_dim:
            raise ValueError("--share-all-embeddings needs --encoder-embed-dim equal to --decoder-embed-dim")


def latent_defaults(args) -> None:
    args.latent_dim = getattr(args, "latent_dim", None) or 32
    args.latent_injection = getattr(args, "latent_injection", None) or "both"
    args.posterior_encoder_layers = getattr(args, "posterior_encoder_layers", None) or 1
    args.prior_hidden_dim = getattr(args, "prior_hidden_dim", None)
    args.posterior_bn_gamma = getattr(args, "posterior_bn_gamma", None) or 0.0
    args.bow_head = getattr(args, "bow_head", None) or "shared"
    args.prior_slot_scale = 1.0 if getattr(args, "prior_slot_scale", None) is None else args.prior_slot_scale
