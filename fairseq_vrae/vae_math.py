"""The VAE maths, shared by training and evaluation and kept apart from the networks.

Conventions: a diagonal Gaussian posterior q(z|x) = N(mu, diag(exp(logvar))) and the
standard normal prior p(z) = N(0, I).  Everything that can lose precision (exp of a
log-variance, sums of KL terms, log-sum-exp) is computed in float32 whatever the
input dtype, so fp16/bf16 training cannot overflow here.
"""

import math
from typing import Optional

import torch
from torch import Tensor

#: log sigma^2 is clamped to this range: sigma from 4.5e-5 to 148.  Wider than any
#: posterior a sentence VAE learns, narrow enough that exp() stays finite in fp16.
LOGVAR_MIN = -20.0
LOGVAR_MAX = 10.0

_LOG_2PI = math.log(2.0 * math.pi)


def clamp_logvar(logvar: Tensor) -> Tensor:
    return logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def reparameterize(
    mu: Tensor, logvar: Tensor, generator: Optional[torch.Generator] = None
) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I); differentiable in mu and logvar."""
    mu32, logvar32 = mu.float(), logvar.float()
    eps = torch.randn(mu32.shape, dtype=mu32.dtype, device=mu32.device, generator=generator)
    return (mu32 + torch.exp(0.5 * logvar32) * eps).to(mu.dtype)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension, shape of mu, float32."""
    mu32, logvar32 = mu.float(), logvar.float()
    return 0.5 * (mu32.pow(2) + logvar32.exp() - 1.0 - logvar32)


def free_bits_kl(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """Summed KL with a floor of ``free_bits`` nats per dimension (Kingma et al. 2016).

    The floor applies to each dimension's KL averaged over the batch, so single
    sentences may still go below it; the result is scaled back to a batch sum.
    """
    batch_size = kl_per_dim.size(0)
    per_dim_mean = kl_per_dim.float().mean(dim=0)
    return per_dim_mean.clamp(min=free_bits).sum() * batch_size


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension, float32."""
    z32, mu32, logvar32 = z.float(), mu.float(), logvar.float()
    return -0.5 * (_LOG_2PI + logvar32 + (z32 - mu32).pow(2) / logvar32.exp()).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension, float32."""
    z32 = z.float()
    return -0.5 * (_LOG_2PI + z32.pow(2)).sum(-1)


# --------------------------------------------------------------------------------------
# KL weight schedules: functions of the update count only, so a resumed run continues
# exactly where it stopped.


def logistic_kl_weight(update: int, steepness: float, midpoint: float) -> float:
    """Bowman et al. (2015): a sigmoid of the update count, 0.5 at ``midpoint``."""
    x = -steepness * (update - midpoint)
    if x > 700:  # exp overflow; the weight is 0 to double precision anyway
        return 0.0
    return 1.0 / (1.0 + math.exp(x))


def linear_kl_weight(update: int, warmup_updates: int) -> float:
    if warmup_updates <= 0:
        return 1.0
    return min(1.0, update / warmup_updates)


def cyclical_kl_weight(update: int, total_updates: int, cycles: int, rising: float) -> float:
    """Fu et al. (2019): ``cycles`` repetitions of a linear rise (the first ``rising``
    fraction of each cycle) followed by a plateau at 1, spread over ``total_updates``;
    1 after that."""
    if update >= total_updates:
        return 1.0
    period = total_updates / cycles
    position = (update % period) / period
    return min(1.0, position / rising) if rising > 0 else 1.0


def kl_weight(
    schedule: str,
    update: int,
    final_weight: float = 1.0,
    steepness: float = 0.0025,
    midpoint: float = 2500,
    warmup_updates: int = 10000,
    total_updates: int = 0,
    cycles: int = 4,
    rising: float = 0.5,
) -> float:
    """beta at ``update`` for the named schedule, scaled to end at ``final_weight``."""
    if schedule == "constant":
        shape = 1.0
    elif schedule == "logistic":
        shape = logistic_kl_weight(update, steepness, midpoint)
    elif schedule == "linear":
        shape = linear_kl_weight(update, warmup_updates)
    elif schedule == "cyclical":
        if total_updates <= 0:
            raise ValueError(
                "--kl-schedule cyclical needs --kl-total-updates or --max-update "
                "to know the length of the cycles"
            )
        shape = cyclical_kl_weight(update, total_updates, cycles, rising)
    else:
        raise ValueError(f"unknown KL schedule {schedule!r}")
    return final_weight * shape


# --------------------------------------------------------------------------------------
# latent codes for generation


def interpolate_latents(start: Tensor, end: Tensor, weights: Tensor, method: str = "linear") -> Tensor:
    """Points between ``start`` and ``end`` (``(batch, dim)``) at ``weights`` in [0, 1].

    ``spherical`` follows the great circle between the two codes (slerp), which keeps
    the norm typical of samples from a high-dimensional Gaussian; it falls back to
    linear interpolation for (nearly) parallel codes.
    """
    a, b = start.float(), end.float()
    t = weights.float().view(-1, 1)
    if method == "linear":
        return (1 - t) * a + t * b
    if method != "spherical":
        raise ValueError(f"unknown interpolation {method!r}")
    cosine = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).clamp(min=1e-12)
    omega = torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7))
    sin_omega = torch.sin(omega)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin_omega
    linear = (1 - t) * a + t * b
    return torch.where(sin_omega.abs() < 1e-6, linear, spherical)


def prior_latents(sample_ids: Tensor, dim: int, seed: int) -> Tensor:
    """z ~ N(0, I) for each sample id, fixed by (seed, id) whatever the batching."""
    codes = []
    for sample_id in sample_ids.tolist():
        generator = torch.Generator().manual_seed((seed * 1_000_003 + int(sample_id)) % (2**63 - 1))
        codes.append(torch.randn(dim, generator=generator))
    return torch.stack(codes) if codes else torch.zeros(0, dim)
