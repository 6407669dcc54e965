"""The ``vrae_elbo`` criterion: reconstruction NLL + beta * KL, with the paper's tricks.

It works under any fairseq task that hosts a model with a latent layer (``vrae_lm``,
``translation``, ...): the KL clock is the model's update count, word dropout uses
the decoder's own dictionary, and validation can add the importance-weighted bound,
the mutual information and the active units.
"""

import contextlib
import logging
import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import ChoiceEnum
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.distributed import utils as distributed_utils
from omegaconf import II, OmegaConf, open_dict

from ..evaluation import ActiveUnitsMeter, LatentEvaluationConfig, MutualInformationMeter, importance_weighted_evaluation
from ..models.latent import find_latent_layer
from ..vae_math import free_bits_kl_to_prior, gaussian_kl, kl_weight, sentence_seeds, slot_noise
from .recipes import RECIPES, recipe_settings

logger = logging.getLogger(__name__)

KL_SCHEDULES = ChoiceEnum(["logistic", "linear", "cyclical", "constant"])
VAE_RECIPES = ChoiceEnum(["none", *RECIPES])
DRAW_RANKINGS = ChoiceEnum(["decoder", "bow"])


@dataclass
class VRAEELBOConfig(LatentEvaluationConfig):
    vae_recipe: VAE_RECIPES = field(
        default="none",
        metadata={"help": "set the KL schedule, word dropout and free bits to a named recipe "
                  "scaled to --max-update (anneal-free-bits, bowman, cyclical); replaces "
                  "values given for those flags"},
    )
    kl_schedule: KL_SCHEDULES = field(
        default="logistic",
        metadata={"help": "how the KL weight beta rises with the update count"},
    )
    kl_weight: float = field(
        default=1.0, metadata={"help": "final (or constant) KL weight"}
    )
    kl_logistic_steepness: float = field(
        default=0.0025, metadata={"help": "logistic schedule: slope k of 1/(1+exp(-k(t-t0)))"}
    )
    kl_logistic_midpoint: int = field(
        default=2500, metadata={"help": "logistic schedule: update t0 where beta is half"}
    )
    kl_warmup_updates: int = field(
        default=10000, metadata={"help": "linear schedule: updates from 0 to the final weight"}
    )
    kl_cycles: int = field(
        default=4, metadata={"help": "cyclical schedule: number of cycles (Fu et al. 2019)"}
    )
    kl_cycle_rising: float = field(
        default=0.5, metadata={"help": "cyclical schedule: rising fraction of each cycle"}
    )
    kl_total_updates: int = field(
        default=0,
        metadata={"help": "cyclical schedule: updates the cycles span (default: --max-update)"},
    )
    word_dropout: float = field(
        default=0.0,
        metadata={
            "help": "training only: probability of replacing each decoder input word by "
            "<unk> (1 = inputless decoder)"
        },
    )
    free_bits: float = field(
        default=0.0,
        metadata={"help": "training only: KL floor in nats per latent dimension (batch mean)"},
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "training only: label smoothing of the reconstruction term (as "
                  "label_smoothed_cross_entropy); the logged nll_loss and validation use the "
                  "unsmoothed likelihood"},
    )
    bow_loss_weight: float = field(
        default=0.0,
        metadata={"help": "training only: weight of a bag-of-words loss that predicts the "
                  "target's words from z alone (Zhao et al. 2017); needs a model with a "
                  "bag-of-words head (cvae_transformer, cvae_lstm)"},
    )
    prior_draws: int = field(
        default=0,
        metadata={"help": "training only: also score the target under this many draws of the "
                  "conditional prior p(z|x) and train on the draw that explains it best (chosen "
                  "without dropout or gradient), so that different draws come to stand for "
                  "different translations (multiple-choice learning); conditional VAEs only; 0 = off"},
    )
    prior_draw_weight: float = field(
        default=1.0, metadata={"help": "weight of the best prior draw's reconstruction term (--prior-draws)"}
    )
    prior_draw_slots: bool = field(
        default=False,
        metadata={"help": "--prior-draws K: the draws are the prior's K fixed slots mu(x) + sigma(x) * e_k, "
                  "the same e_k for every pair and update, so that each slot comes to stand for one kind "
                  "of translation, like an expert of a mixture (translate with --latent-mode prior-slots); "
                  "default: fresh draws every update"},
    )
    prior_draw_ranking: DRAW_RANKINGS = field(
        default="decoder",
        metadata={"help": "--prior-draws: how the best draw is found: decoder = the highest likelihood of the "
                  "target under the decoder (a decoder pass without dropout or gradient, K output layers); "
                  "bow = the highest likelihood of the target's words under the bag-of-words head (one "
                  "vocabulary-sized distribution per sentence and draw: far cheaper; needs a model with the head)"},
    )
    prior_mean_weight: float = field(
        default=0.0,
        metadata={"help": "training only: weight of a reconstruction term with z at the prior's mean mu(x), "
                  "the code --latent-mode prior-mean translates with, so that the single best translation "
                  "is trained as the translation model's own is; conditional VAEs only; 0 = off"},
    )
    seed: int = II("common.seed")
    max_update: int = II("optimization.max_update")
    # fairseq's --sentence-avg: each batch's gradient is its summed loss over its
    # sentences rather than over its tokens (cross_entropy's meaning)
    sentence_avg: bool = II("optimization.sentence_avg")


def apply_word_dropout(tokens: torch.Tensor, probability: float, dictionary) -> torch.Tensor:
    """Replace words by <unk> with ``probability``; bos/eos/pad/unk are never touched."""
    if probability <= 0:
        return tokens
    special = (
        tokens.eq(dictionary.bos())
        | tokens.eq(dictionary.eos())
        | tokens.eq(dictionary.pad())
        | tokens.eq(dictionary.unk())
    )
    drop = torch.rand(tokens.shape, device=tokens.device).lt(probability) & ~special
    return tokens.masked_fill(drop, dictionary.unk())


@register_criterion("vrae_elbo", dataclass=VRAEELBOConfig)
class VRAEELBOCriterion(FairseqCriterion):
    """Negative ELBO, one posterior sample per sentence, KL in closed form (float32).

    Training optimises ``rec + beta * KL`` (KL floored per dimension with free bits);
    validation always reports the true bound: beta = 1, no word dropout, no free bits.
    ``loss`` is per target token in base 2 (fairseq's convention), so ``2**loss`` of a
    validation run equals ``ppl``.
    """

    def __init__(self, cfg: VRAEELBOConfig, task):
        super().__init__(task)
        if not 0.0 <= cfg.word_dropout <= 1.0:
            raise ValueError(f"--word-dropout must be in [0, 1], got {cfg.word_dropout}")
        if cfg.free_bits < 0:
            raise ValueError(f"--free-bits must be >= 0, got {cfg.free_bits}")
        # a config built outside fairseq keeps the unresolved "${optimization.sentence_avg}"
        # string, which is truthy; only a real True turns sentence averaging on
        self.sentence_avg = getattr(cfg, "sentence_avg", False) is True
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
        if cfg.bow_loss_weight < 0:
            raise ValueError(f"--bow-loss-weight must be >= 0, got {cfg.bow_loss_weight}")
        if cfg.prior_draws < 0 or cfg.prior_draw_weight < 0:
            raise ValueError(f"--prior-draws and --prior-draw-weight must be >= 0, got {cfg.prior_draws} "
                             f"and {cfg.prior_draw_weight}")
        if cfg.prior_mean_weight < 0:
            raise ValueError(f"--prior-mean-weight must be >= 0, got {cfg.prior_mean_weight}")
        if cfg.prior_draw_slots and cfg.prior_draws < 2:
            raise ValueError(f"--prior-draw-slots trains the best of --prior-draws K slots, which needs K >= 2, "
                             f"got --prior-draws {cfg.prior_draws}")
        if cfg.iw_samples < 0:
            raise ValueError(f"--iw-samples must be >= 0, got {cfg.iw_samples}")
        if cfg.iw_chunk_tokens < 1:
            raise ValueError(f"--iw-chunk-tokens must be >= 1, got {cfg.iw_chunk_tokens}")
        if cfg.vae_recipe not in (None, "none"):
            settings = recipe_settings(str(cfg.vae_recipe), cfg.max_update)
            with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
                for name, value in settings.items():
                    setattr(cfg, name, value)
            logger.info(f"--vae-recipe {cfg.vae_recipe}: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        self.cfg = cfg
        self._schedule_length = None  # resolved from the model at the first training step
        total = cfg.kl_total_updates or (cfg.max_update or 0)
        self._schedule_args = dict(
            schedule=cfg.kl_schedule,
            final_weight=cfg.kl_weight,
            steepness=cfg.kl_logistic_steepness,
            midpoint=cfg.kl_logistic_midpoint,
            warmup_updates=cfg.kl_warmup_updates,
            total_updates=total,
            cycles=cfg.kl_cycles,
            rising=cfg.kl_cycle_rising,
        )
        kl_weight(update=0, **self._schedule_args)  # fail now on a bad schedule

    @classmethod
    def add_args(cls, parser):
        """The config's options, less those a task already declared (``--iw-samples``)."""
        existing = set(parser._option_string_actions)
        scratch = type(parser)(add_help=False)
        gen_parser_from_dataclass(scratch, VRAEELBOConfig())
        for action in scratch._actions:
            if action.option_strings and not existing.intersection(action.option_strings):
                parser._add_action(action)

    def kl_weight_for(self, latent) -> float:
        """beta at the model's update count (set by fairseq for every task)."""
        args = self._schedule_args
        if self.cfg.kl_schedule == "cyclical" and not self.cfg.kl_total_updates:
            args = dict(args, total_updates=self.schedule_length(latent))
        return kl_weight(update=latent.num_updates, **args)

    def schedule_length(self, latent) -> int:
        """Updates the cycles span: --max-update when the run starts, then whatever the
        model saved, so a resume with another --max-update continues the same cycles."""
        if self._schedule_length is None:
            stored = int(latent.kl_schedule_updates)
            current = int(self.cfg.max_update or 0)
            if latent.num_updates == 0 or stored <= 0:
                latent.kl_schedule_updates.fill_(current)
                stored = current
            elif stored != current:
                logger.warning(
                    f"the cyclical KL schedule keeps the length it started with ({stored} "
                    f"updates), not --max-update {current}; give --kl-total-updates to set it"
                )
            self._schedule_length = stored
        return self._schedule_length

    def forward(self, model, sample, reduce=True):
        net_input = sample["net_input"]
        training = model.training
        if training:
            decorrelate_workers()
            if self.cfg.word_dropout > 0:
                net_input = dict(
                    net_input,
                    prev_output_tokens=apply_word_dropout(
                        net_input["prev_output_tokens"], self.cfg.word_dropout, model.decoder.dictionary
                    ),
                    # a conditional VAE's q(z|x, y) reads the target itself, not the dropped copy
                    posterior_tokens=net_input["prev_output_tokens"],
                )
        logits, extra = model(**net_input)
        if not isinstance(extra, dict) or "mu" not in extra:
            find_latent_layer(model)  # explains which models this criterion trains
            raise ValueError(f"{type(model).__name__} does not return the latent contract (mu, logvar, ...)")
        target = sample["target"]
        smoothed, rec = self.reconstruction(logits, target, training)
        kl_per_dim = gaussian_kl(extra["mu"], extra["logvar"], extra["prior_mu"], extra["prior_logvar"])
        kl = kl_per_dim.sum()
        # a model with a bag-of-words head always scores it, so that the head takes part in
        # every step (DDP without --find-unused-parameters) even at weight 0
        has_head = getattr(model, "bag_of_words_logits", None) is not None
        bow = self.bag_of_words_nll(model, extra, target) if has_head or self.cfg.bow_loss_weight > 0 else None
        if training:
            beta = self.kl_weight_for(find_latent_layer(model))
            if self.cfg.free_bits > 0:
                kl_term = free_bits_kl_to_prior(extra["mu"], extra["logvar"], extra["prior_mu"],
                                                extra["prior_logvar"], self.cfg.free_bits)
            else:
                kl_term = kl
            loss = smoothed + beta * kl_term
            if bow is not None:
                loss = loss + self.cfg.bow_loss_weight * bow
            if self.cfg.prior_draws > 0:
                draw_smoothed, draw_rec, best = self.best_prior_draw_loss(
                    model, net_input, target, ranking_input=sample["net_input"]["prev_output_tokens"],
                    trained=(logits, extra))
                loss = loss + self.cfg.prior_draw_weight * draw_smoothed
            if self.cfg.prior_mean_weight > 0:
                mean_smoothed, mean_rec = self.prior_mean_loss(model, net_input, target, trained=(logits, extra))
                loss = loss + self.cfg.prior_mean_weight * mean_smoothed
        else:
            beta = 1.0
            loss = rec + kl

        ntokens = sample["ntokens"]
        nsentences = target.size(0)
        # what fairseq divides the gradient (and the logged loss) by, as in cross_entropy
        sample_size = nsentences if self.sentence_avg else ntokens
        logging_output = {
            "loss": loss.data,
            "rec": rec.data,
            "nll_loss": rec.data,
            "kl": kl.data,
            "kl_weight": beta * nsentences,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        if bow is not None:
            logging_output["bow"] = bow.data
        if training and self.cfg.prior_draws > 0:
            logging_output["best_draw"] = draw_rec.data
            if self.cfg.prior_draw_slots:
                wins = torch.bincount(best, minlength=self.cfg.prior_draws).tolist()
                logging_output.update({f"slot{k}_wins": count for k, count in enumerate(wins)})
        if training and self.cfg.prior_mean_weight > 0:
            logging_output["prior_mean_rec"] = mean_rec.data
        if not training:
            # running sums for the active-unit count over the whole split (summable)
            mu = extra["mu"].detach().double()
            logging_output["latent_mu_sum"] = mu.sum(dim=0)
            logging_output["latent_mu_sq_sum"] = mu.pow(2).sum(dim=0)
            if self.cfg.iw_samples > 0 and nsentences > 0:
                logging_output.update(self.importance_weighted(model, sample))
        return loss, sample_size, logging_output

    def reconstruction(self, logits, target, training: bool):
        """(training loss, NLL), summed: label-smoothed in training when asked."""
        flat_logits = logits.float().view(-1, logits.size(-1))
        if training and self.cfg.label_smoothing > 0:
            return label_smoothed_nll_loss(
                F.log_softmax(flat_logits, dim=-1), target.reshape(-1, 1), self.cfg.label_smoothing,
                ignore_index=self.padding_idx, reduce=True,
            )
        rec = F.cross_entropy(flat_logits, target.reshape(-1), ignore_index=self.padding_idx, reduction="sum")
        return rec, rec

    def best_prior_draw_loss(self, model, net_input, target, ranking_input=None, trained=None):
        """The reconstruction term (training loss, NLL) of each pair under the best of
        ``--prior-draws`` draws z = mu + sigma * eps of its prior p(z|x) (with
        ``--prior-draw-slots``, eps = the fixed slot noise e_k, :func:`slot_noise`, times the
        model's ``--prior-slot-scale``): the draw whose
        decoder gives the target the highest likelihood, found with the decoder in
        evaluation mode, reading ``ranking_input`` (the decoder input before word dropout;
        default: the training input), without gradient; then decoded again as training
        decodes, with both.  Gradient reaches the decoder and, through
        mu and sigma, the prior network, so draws learn to explain different references
        (multiple-choice learning, Guzman-Rivera et al. 2012; the best-of-many-samples
        objective of Bhattacharyya et al. 2018).  Also returns each pair's best draw.
        With ``--prior-draw-ranking bow`` the best draw is the one under which the
        bag-of-words head gives the target's words the highest likelihood: no ranking pass
        through the decoder, one vocabulary-sized distribution per sentence and draw.

        ``trained`` is the training forward's (logits, latent contract).  When z only shifts
        the decoder's output layer (``--latent-injection output``), the prior comes from
        that contract, the draws are ranked from one decoder pass (``logits_for_codes``) and
        the best draw's scores are the training logits moved to its code (``rescore``),
        with that forward's dropout: no second decoder pass with gradient."""
        require_conditional_prior(model, "--prior-draws")
        decoder = model.decoder
        shortcut = trained is not None and decoder.z_only_shifts_output
        by_words = self.cfg.prior_draw_ranking == "bow"
        if shortcut:
            logits, latent = trained
            source = None
            if not by_words:
                with torch.no_grad():  # the source states the ranking pass attends to
                    source = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        else:
            source = latent = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        mu, std = latent["prior_mu"].float(), torch.exp(0.5 * latent["prior_logvar"].float())
        if self.cfg.prior_draw_slots:
            scale = getattr(model.encoder, "prior_slot_scale", 1.0)  # --prior-slot-scale, a model option
            noise = scale * slot_noise(self.cfg.prior_draws, mu.size(-1)).to(mu.device)[:, None, :].expand(-1, mu.size(0), -1)
        else:
            noise = torch.randn((self.cfg.prior_draws,) + tuple(mu.shape), device=mu.device)
        prev = net_input["prev_output_tokens"]
        ranking_input = prev if ranking_input is None else ranking_input
        pad = target.eq(self.padding_idx)
        dtype = latent["z"].dtype

        with torch.no_grad():
            codes = (mu.unsqueeze(0) + std.unsqueeze(0) * noise).to(dtype)
            if by_words:  # sentences x draws
                nll = torch.stack([self.bag_of_words_nll(model, {"z": z}, target, reduce=False) for z in codes], dim=1)
        if not by_words:
            decoder_was_training = decoder.training
            decoder.eval()
            try:
                with torch.no_grad():
                    nll = torch.stack([
                        F.cross_entropy(scores.float().transpose(1, 2), target, reduction="none").masked_fill(pad, 0.0).sum(1)
                        for scores in decoder.logits_for_codes(ranking_input, source, codes)
                    ], dim=1)  # sentences x draws
            finally:
                decoder.train(decoder_was_training)
        best = nll.argmin(dim=1)
        winners = (mu + std * noise[best, torch.arange(mu.size(0), device=mu.device)]).to(dtype)
        if shortcut:
            scores = decoder.rescore(logits, latent["z"], winners)
        else:
            scores = decoder(prev, encoder_out=dict(source, z=winners))[0]
        return (*self.reconstruction(scores, target, training=True), best)

    def prior_mean_loss(self, model, net_input, target, trained=None):
        """The reconstruction term (training loss, NLL) of the target with z at the prior's
        mean mu(x) (``--prior-mean-weight``), decoded as training decodes; gradient reaches the
        decoder and the prior's mean.  ``trained`` is the training forward's (logits, latent
        contract): when z only shifts the decoder's output layer its logits are moved to mu
        (``rescore``), with that forward's dropout, and no decoder pass is added."""
        require_conditional_prior(model, "--prior-mean-weight")
        decoder = model.decoder
        if trained is not None and decoder.z_only_shifts_output:
            logits, latent = trained
            scores = decoder.rescore(logits, latent["z"], latent["prior_mu"].to(latent["z"].dtype))
        else:
            source = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
            scores = decoder(net_input["prev_output_tokens"],
                             encoder_out=dict(source, z=source["prior_mu"].to(source["z"].dtype)))[0]
        return self.reconstruction(scores, target, training=True)

    def bag_of_words_nll(self, model, extra, target, reduce: bool = True) -> torch.Tensor:
        """-sum of log p(word | z) over the target's words (not </s>) under the model's
        bag-of-words head: one distribution per sentence, as in Zhao et al. (2017); summed
        over the batch, or one per sentence without ``reduce``."""
        head = getattr(model, "bag_of_words_logits", None)
        if head is None:
            raise ValueError(
                f"--bow-loss-weight needs a model with a bag-of-words head (--arch cvae_transformer "
                f"or cvae_lstm); {type(model).__name__} has none"
            )
        log_probs = F.log_softmax(head(extra).float(), dim=-1)  # B x V
        words = target.ne(self.padding_idx) & target.ne(model.decoder.dictionary.eos())
        picked = log_probs.gather(1, target.masked_fill(~words, 0))
        per_sentence = -(picked * words.to(picked.dtype)).sum(1)
        return per_sentence.sum() if reduce else per_sentence

    def importance_weighted(self, model, sample) -> dict:
        """IW-NLL of each sentence and what MI needs, noise fixed per sentence (--seed and
        the sentence's index), so batching and the number of workers do not matter."""
        ids = sample.get("id")
        if ids is None or ids.numel() != sample["target"].size(0):
            ids = torch.arange(sample["target"].size(0))
        ids = ids.cpu()
        result = importance_weighted_evaluation(
            model,
            sample,
            self.cfg.iw_samples,
            self.padding_idx,
            chunk_tokens=self.cfg.iw_chunk_tokens,
            sentence_seeds=sentence_seeds(self.cfg.seed, ids),
        )
        return {
            "iw_nll": float(result["iw_nll"].sum()),
            "iw_nsentences": sample["target"].size(0),
            "iw_ntokens": int(sample["ntokens"]),
            "posterior_mu": result["mu"].cpu(),
            "posterior_logvar": result["logvar"].cpu(),
            "posterior_z": result["z"].cpu(),
            "posterior_ids": ids,
        }

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        loss, rec, kl = total("loss"), total("rec"), total("kl")
        ntokens, nsentences = total("ntokens"), total("nsentences")
        sample_size = total("sample_size")
        if sample_size == 0 or nsentences == 0:
            return
        metrics.log_scalar("loss", loss / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("rec", rec / nsentences, nsentences, round=3)
        metrics.log_scalar("kl", kl / nsentences, nsentences, round=3)
        if ntokens > 0:
            metrics.log_scalar("nll_loss", total("nll_loss") / ntokens / math.log(2), ntokens, round=3)
        if any("bow" in log for log in logging_outputs):
            metrics.log_scalar("bow", total("bow") / nsentences, nsentences, round=3)
        if any("best_draw" in log for log in logging_outputs):
            metrics.log_scalar("best_draw", total("best_draw") / nsentences, nsentences, round=3)
        if any("prior_mean_rec" in log for log in logging_outputs):
            metrics.log_scalar("prior_mean_rec", total("prior_mean_rec") / nsentences, nsentences, round=3)
        wins = [total(key) for key in sorted({k for log in logging_outputs for k in log if SLOT_WINS.fullmatch(k)},
                                             key=lambda k: int(SLOT_WINS.fullmatch(k).group(1)))]
        if sum(wins) > 0:
            metrics.log_scalar("slots_used", slots_used(wins), sum(wins), round=2)
        metrics.log_scalar("elbo", (rec + kl) / nsentences, nsentences, round=3)
        metrics.log_scalar("kl_weight", total("kl_weight") / nsentences, nsentences, round=4)
        metrics.log_scalar("_elbo_per_token", (rec + kl) / ntokens, ntokens)
        metrics.log_derived(
            "ppl", lambda meters: safe_exp(meters["_elbo_per_token"].avg), priority=1000
        )
        with_stats = [log for log in logging_outputs if "latent_mu_sum" in log]
        if with_stats:
            metrics.log_custom(
                ActiveUnitsMeter,
                "au",
                sum(log["latent_mu_sum"] for log in with_stats),
                sum(log["latent_mu_sq_sum"] for log in with_stats),
                sum(log.get("nsentences", 0) for log in with_stats),
                priority=1010,
            )
        with_iw = [log for log in logging_outputs if "iw_nll" in log]
        iw_sentences = sum(log["iw_nsentences"] for log in with_iw)
        iw_tokens = sum(log["iw_ntokens"] for log in with_iw)
        if iw_sentences == 0 or iw_tokens == 0:
            return
        iw_nll = sum(log["iw_nll"] for log in with_iw)
        metrics.log_scalar("iw_nll", iw_nll / iw_sentences, iw_sentences, round=3, priority=1020)
        metrics.log_scalar("_iw_nll_per_token", iw_nll / iw_tokens, iw_tokens)
        metrics.log_derived(
            "iw_ppl", lambda meters: safe_exp(meters["_iw_nll_per_token"].avg), priority=1030
        )
        metrics.log_custom(
            MutualInformationMeter,
            "mi",
            torch.cat([log["posterior_mu"] for log in with_iw]),
            torch.cat([log["posterior_logvar"] for log in with_iw]),
            torch.cat([log["posterior_z"] for log in with_iw]),
            torch.cat([log["posterior_ids"] for log in with_iw]),
            priority=1040,
        )

    def logging_outputs_can_be_summed(self) -> bool:
        """Not with --iw-samples: MI needs every posterior, so workers gather their
        logging outputs instead of summing them."""
        return self.cfg.iw_samples == 0


def require_conditional_prior(model, option: str) -> None:
    """Refuse ``option`` (a term decoded from codes of the prior p(z|x)) for a model
    without a conditional prior."""
    if not getattr(model.encoder, "reads_target", False):
        raise ValueError(f"{option} needs a conditional VAE (--arch cvae_transformer or cvae_lstm) "
                         f"whose prior reads the source; {type(model).__name__} has none")


SLOT_WINS = re.compile(r"slot(\d+)_wins")


def slots_used(wins) -> float:
    """exp(entropy) of the share of pairs each slot won (--prior-draw-slots): K when the
    slots win equally often, 1 when one slot wins every pair."""
    total = float(sum(wins))
    shares = [w / total for w in wins if w > 0]
    return math.exp(-sum(p * math.log(p) for p in shares))


def decorrelate_workers() -> None:
    """Give each data-parallel worker its own noise (posterior samples, word dropout).

    fairseq seeds every worker with ``seed + num_updates``, which would draw the same
    epsilon on every GPU.  A draw from that shared state, offset by the rank, keeps
    runs reproducible and resumable while making the workers' streams differ.  A
    single worker is left untouched.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world_size = distributed_utils.get_data_parallel_world_size()
    if world_size <= 1:
        return
    rank = distributed_utils.get_data_parallel_rank()
    shared = int(torch.randint(0, 2**31 - 1, (1,)).item())
    utils.set_torch_seed((shared * world_size + rank) % (2**31 - 1))


def safe_exp(value) -> float:
    """exp of a mean log-loss for a logged perplexity; inf rather than an overflow."""
    value = float(value)
    return round(math.exp(value), 2) if value < 700 else float("inf")
