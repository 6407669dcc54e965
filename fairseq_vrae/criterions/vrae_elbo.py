"""The ``vrae_elbo`` criterion: reconstruction NLL + beta * KL, with the paper's tricks."""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..evaluation import ActiveUnitsMeter
from ..vae_math import free_bits_kl, gaussian_kl, kl_weight

KL_SCHEDULES = ChoiceEnum(["logistic", "linear", "cyclical", "constant"])


@dataclass
class VRAEELBOConfig(FairseqDataclass):
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
    max_update: int = II("optimization.max_update")


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
        self.cfg = cfg
        self.num_updates = 0
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

    def set_num_updates(self, num_updates: int) -> None:
        self.num_updates = num_updates

    def current_kl_weight(self) -> float:
        return kl_weight(update=self.num_updates, **self._schedule_args)

    def forward(self, model, sample, reduce=True):
        net_input = sample["net_input"]
        training = model.training
        if training and self.cfg.word_dropout > 0:
            net_input = dict(
                net_input,
                prev_output_tokens=apply_word_dropout(
                    net_input["prev_output_tokens"], self.cfg.word_dropout, self.task.dictionary
                ),
            )
        logits, extra = model(**net_input)
        target = sample["target"]
        rec = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)),
            target.reshape(-1),
            ignore_index=self.padding_idx,
            reduction="sum",
        )
        kl_per_dim = gaussian_kl(extra["mu"], extra["logvar"])
        kl = kl_per_dim.sum()
        if training:
            beta = self.current_kl_weight()
            kl_term = free_bits_kl(kl_per_dim, self.cfg.free_bits) if self.cfg.free_bits > 0 else kl
            loss = rec + beta * kl_term
        else:
            beta = 1.0
            loss = rec + kl

        ntokens = sample["ntokens"]
        nsentences = target.size(0)
        logging_output = {
            "loss": loss.data,
            "rec": rec.data,
            "kl": kl.data,
            "kl_weight": beta * nsentences,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": ntokens,
        }
        if not training:
            # running sums for the active-unit count over the whole split (summable)
            mu = extra["mu"].detach().double()
            logging_output["latent_mu_sum"] = mu.sum(dim=0)
            logging_output["latent_mu_sq_sum"] = mu.pow(2).sum(dim=0)
        return loss, ntokens, logging_output

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

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def safe_exp(value) -> float:
    """exp of a mean log-loss for a logged perplexity; inf rather than an overflow."""
    value = float(value)
    return round(math.exp(value), 2) if value < 700 else float("inf")
