"""Evaluation of a trained VAE: the importance-weighted NLL and the statistics of q(z|x).

The maths lives in :mod:`fairseq_vrae.vae_math`; this module runs the networks in
memory-bounded chunks and accumulates whole-split statistics in fairseq meters.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import meters as fairseq_meters
from fairseq.logging.meters import Meter
from torch import Tensor

from .vae_math import (
    ACTIVE_UNIT_THRESHOLD,
    active_units,
    importance_weighted_nll,
    log_importance_weights,
    mutual_information,
    seeded_normal,
)


@dataclass
class LatentEvaluationConfig(FairseqDataclass):
    """The evaluation options of ``vrae_elbo``.  Tasks that host VAEs declare them too
    (``vrae_lm`` does), so that ``fairseq-validate --task vrae_lm --iw-samples K``
    parses without naming the criterion; the checkpoint's criterion gets the value."""

    iw_samples: int = field(
        default=0,
        metadata={
            "help": "validation: also estimate -log p(x) with this many importance samples "
            "per sentence (500 is the usual protocol) and the mutual information I(x; z) "
            "over the whole split; 0 = the bound only"
        },
    )
    iw_chunk_tokens: int = field(
        default=16384,
        metadata={"help": "--iw-samples: target tokens the decoder scores in one pass "
                  "(lower it if evaluation runs out of memory)"},
    )


def samples_per_chunk(num_samples: int, batch_size: int, target_length: int, chunk_tokens: int) -> int:
    """How many posterior samples of every sentence one decoder pass may score."""
    per_sample = max(1, batch_size * target_length)
    return max(1, min(num_samples, chunk_tokens // per_sample))


@torch.no_grad()
def sentence_log_likelihood(model, prev_output_tokens: Tensor, target: Tensor, encoder_out: Dict, padding_idx: int) -> Tensor:
    """log p(x|z) per row, float32, for the code ``encoder_out["z"]`` of each row."""
    logits, _ = model.decoder(prev_output_tokens, encoder_out=encoder_out)
    token_nll = F.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        target.reshape(-1),
        ignore_index=padding_idx,
        reduction="none",
    )
    return -token_nll.view(target.shape).sum(dim=1)


@torch.no_grad()
def importance_weighted_evaluation(
    model,
    sample: Dict,
    num_samples: int,
    padding_idx: int,
    chunk_tokens: int = 16384,
    generator: Optional[torch.Generator] = None,
    sentence_seeds: Optional[Tensor] = None,
) -> Dict[str, Tensor]:
    """IW-NLL of every sentence of ``sample`` with ``num_samples`` draws from q(z|x).

    For a conditional VAE (an encoder with ``reads_target``) this is -log p(y|x) with
    the proposal q(z|x, y) and the prior p(z|x).

    The encoder runs once; its output (the latent contract of
    :mod:`fairseq_vrae.models.latent`, plus whatever else the decoder reads) is expanded
    with the encoder's own ``reorder_encoder_out`` and its ``z`` replaced by the
    samples, so the decoder is fed exactly as in training.  It scores ``K`` codes per
    sentence in chunks of at most about ``chunk_tokens`` target tokens, so K = 500 fits
    in memory.  The noise comes from ``sentence_seeds`` (one per row, see
    :func:`~fairseq_vrae.vae_math.seeded_normal`) when given, else from ``generator``.
    Returns ``iw_nll`` (nats per sentence, float64), the posterior ``mu`` and
    ``logvar``, and ``z``, the first sample of each sentence (for the MI estimator).
    """
    if num_samples < 1:
        raise ValueError(f"the number of importance samples must be >= 1, got {num_samples}")
    net_input = sample["net_input"]
    encoder_inputs = {k: v for k, v in net_input.items() if k not in ("prev_output_tokens", "sample_posterior")}
    if getattr(model.encoder, "reads_target", False):  # a conditional VAE's q(z|x, y)
        encoder_inputs["posterior_tokens"] = net_input["prev_output_tokens"]
    encoder_out = model.encoder(**encoder_inputs, sample_posterior=False)
    mu, logvar = encoder_out["mu"].float(), encoder_out["logvar"].float()
    prior_mu, prior_logvar = encoder_out["prior_mu"].float(), encoder_out["prior_logvar"].float()
    prev_output_tokens, target = net_input["prev_output_tokens"], sample["target"]
    batch_size, target_length = target.shape
    chunk = samples_per_chunk(num_samples, batch_size, target_length, chunk_tokens)
    std = torch.exp(0.5 * logvar)
    # all noise up front (small: batch x K x dim), so the chunk size cannot change it
    if sentence_seeds is not None:
        noise = seeded_normal(sentence_seeds, (num_samples, mu.size(1))).to(mu.device)
    else:
        noise = torch.randn((batch_size, num_samples, mu.size(1)), device=mu.device, generator=generator)
    log_weights = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        z = mu.unsqueeze(1) + std.unsqueeze(1) * noise[:, start : start + k]  # (batch, k, dim)
        rows = torch.arange(batch_size, device=mu.device).repeat_interleave(k)
        expanded = dict(model.encoder.reorder_encoder_out(encoder_out, rows))
        expanded["z"] = z.view(batch_size * k, -1).to(encoder_out["z"].dtype)
        log_likelihood = sentence_log_likelihood(
            model,
            prev_output_tokens.repeat_interleave(k, dim=0),
            target.repeat_interleave(k, dim=0),
            expanded,
            padding_idx,
        ).view(batch_size, k)
        log_weights.append(log_importance_weights(log_likelihood, z, mu, logvar, prior_mu, prior_logvar))
    return {
        "iw_nll": importance_weighted_nll(torch.cat(log_weights, dim=1)),
        "mu": mu,
        "logvar": logvar,
        "z": mu + std * noise[:, 0],
    }


class ActiveUnitsMeter(Meter):
    """Counts active latent units over everything it is given (batches, workers).

    Keeps running sums of the posterior means and their squares, so a split of any
    size costs two vectors of memory.
    """

    def __init__(self, threshold: float = ACTIVE_UNIT_THRESHOLD):
        self.threshold = threshold
        self.reset()

    def reset(self):
        self.mu_sum: Optional[Tensor] = None
        self.mu_sq_sum: Optional[Tensor] = None
        self.count = 0.0

    def update(self, mu_sum: Tensor, mu_sq_sum: Tensor, count: float):
        mu_sum = torch.as_tensor(mu_sum).detach().double().cpu()
        mu_sq_sum = torch.as_tensor(mu_sq_sum).detach().double().cpu()
        if self.mu_sum is None:
            self.mu_sum, self.mu_sq_sum = mu_sum.clone(), mu_sq_sum.clone()
        else:
            self.mu_sum += mu_sum
            self.mu_sq_sum += mu_sq_sum
        self.count += float(count)

    def state_dict(self):
        return {"threshold": self.threshold, "mu_sum": self.mu_sum, "mu_sq_sum": self.mu_sq_sum, "count": self.count}

    def load_state_dict(self, state_dict):
        self.threshold = state_dict["threshold"]
        self.mu_sum, self.mu_sq_sum = state_dict["mu_sum"], state_dict["mu_sq_sum"]
        self.count = state_dict["count"]

    @property
    def smoothed_value(self) -> float:
        if self.mu_sum is None:
            return 0
        return active_units(self.mu_sum, self.mu_sq_sum, self.count, self.threshold)


class MutualInformationMeter(Meter):
    """I_q(x; z) over the whole split: keeps every posterior it is given (N x 3 x dim
    floats) and evaluates the aggregate-posterior estimator when read.

    Given each sentence's sample ``z`` (drawn per sentence by the criterion), the value
    does not depend on the order in which batches or workers deliver the posteriors.
    Given sentence ids, a sentence seen again means a new pass over the data (fairseq
    keeps a "valid" aggregator for the whole run): the meter then starts afresh, so it
    holds one split at most.
    """

    def __init__(self, seed: int = 1):
        self.seed = seed
        self.reset()

    def reset(self):
        self.mu, self.logvar, self.z = [], [], []
        self.seen: set = set()
        self._cached: Optional[float] = None

    def update(self, mu: Tensor, logvar: Tensor, z: Optional[Tensor] = None, ids: Optional[Tensor] = None):
        if ids is not None:
            ids = torch.as_tensor(ids).view(-1).tolist()
            if self.seen.intersection(ids):
                self.reset()
            self.seen.update(ids)
        self.mu.append(mu.detach().float().cpu())
        self.logvar.append(logvar.detach().float().cpu())
        if z is not None:
            self.z.append(z.detach().float().cpu())
        self._cached = None

    @property
    def num_posteriors(self) -> int:
        return sum(part.size(0) for part in self.mu)

    def state_dict(self):
        # the posteriors belong to one pass over a split; checkpoints do not keep them
        return {"seed": self.seed}

    def load_state_dict(self, state_dict):
        self.seed = state_dict["seed"]
        self.reset()

    @property
    def smoothed_value(self) -> float:
        if not self.mu:
            return math.nan
        if self._cached is None:
            z = torch.cat(self.z) if len(self.z) == len(self.mu) else None
            generator = torch.Generator().manual_seed(self.seed)
            value = mutual_information(torch.cat(self.mu), torch.cat(self.logvar), generator=generator, z=z)
            self._cached = round(value, 3)
        return self._cached


# fairseq saves the meters of its "valid" aggregator in checkpoints and restores them
# by class name from fairseq.logging.meters; make ours findable there so that runs
# that logged them resume.
for _meter_class in (ActiveUnitsMeter, MutualInformationMeter):
    setattr(fairseq_meters, _meter_class.__name__, _meter_class)
