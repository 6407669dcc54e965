"""The VAE maths, shared by training and evaluation and kept apart from the networks.

Conventions: a diagonal Gaussian posterior q(z|x) = N(mu, diag(exp(logvar))) and a
diagonal Gaussian prior given by its own (prior_mu, prior_logvar): zeros for the
standard normal N(0, I) of the sentence VAE, the output of a network for a
conditional prior p(z|c).  Everything that can lose precision (exp of a
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


def gaussian_kl(mu: Tensor, logvar: Tensor, prior_mu: Tensor, prior_logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar))) per latent dimension,
    closed form, float32 (Kingma & Welling 2014, appendix B, for a standard normal prior;
    the general diagonal case as in Sohn et al. 2015)."""
    mu, logvar = mu.float(), logvar.float()
    prior_mu, prior_logvar = prior_mu.float(), prior_logvar.float()
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1.0)


def sentence_seeds(seed: int, ids: Tensor, draws: int = 1) -> Tensor:
    """The seed of each (sentence id, draw) pair: ``seed * 1_000_003 + id * draws + k``
    for k < ``draws``, id-major (with one draw, ``seed * 1_000_003 + id``).  Every random
    code of a sentence (prior samples, importance samples, translation draws) comes from
    its own seed, so results do not depend on batching, workers or device."""
    ids = ids.cpu().long()
    if draws == 1:
        return seed * 1_000_003 + ids
    k = torch.arange(draws, dtype=torch.long).repeat(ids.numel())
    return seed * 1_000_003 + ids.repeat_interleave(draws) * draws + k


def seeded_normal(seeds: Tensor, shape: tuple) -> Tensor:
    """N(0, I) noise of shape ``(len(seeds), *shape)``, float32 on the CPU, each row from a
    generator of its own seed: the same draws whatever the batch, worker or device."""
    rows = [
        torch.randn(shape, generator=torch.Generator().manual_seed(int(seed) % (2**63 - 1)))
        for seed in seeds.tolist()
    ]
    return torch.stack(rows) if rows else torch.zeros((0, *shape))


def seeded_gaussian(mu: Tensor, logvar: Tensor, seeds: Tensor, temperature: float = 1.0) -> Tensor:
    """One draw of N(mu, diag(exp(logvar))) per row, its noise fixed by the row's seed
    (:func:`seeded_normal`), the standard deviation scaled by ``temperature``; float32."""
    noise = seeded_normal(seeds, (mu.size(-1),)).to(mu.device)
    return mu.float() + temperature * torch.exp(0.5 * logvar.float()) * noise


#: the seeds of the prior's fixed slots (:func:`slot_noise`), apart from every
#: sentence_seeds value (those are below 2**62 for any --seed under 4.6e12)
SLOT_SEED_BASE = 2**62


def slot_seeds(count: int) -> Tensor:
    """The seeds of slots 0 .. ``count`` - 1: fixed, whatever ``--seed``, so the slots a
    model trained with are the ones it translates with; slot k is the same for any count."""
    return SLOT_SEED_BASE + torch.arange(count, dtype=torch.long)


def slot_noise(count: int, dim: int) -> Tensor:
    """``(count, dim)`` N(0, I) vectors e_k, the noise of the prior's fixed slots: the codes
    mu(x) + sigma(x) * e_k are the same K points of every source's p(z|x), so that each
    can come to stand for one kind of translation, like an expert of a mixture (float32, CPU)."""
    return seeded_normal(slot_seeds(count), (dim,))


def free_bits_kl(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """Summed KL with a floor of ``free_bits`` nats per dimension (Kingma et al. 2016).

    The floor applies to each dimension's KL averaged over the batch, so single
    sentences may still go below it; the result is scaled back to a batch sum.
    """
    batch_size = kl_per_dim.size(0)
    per_dim_mean = kl_per_dim.float().mean(dim=0)
    return per_dim_mean.clamp(min=free_bits).sum() * batch_size


def free_bits_kl_to_prior(mu: Tensor, logvar: Tensor, prior_mu: Tensor, prior_logvar: Tensor, free_bits: float) -> Tensor:
    """The free-bits KL term when the prior may be learned (a conditional VAE's p(z|c)).

    Its value is :func:`free_bits_kl` of the KL.  The floor only spares the posterior:
    below it, a learned prior would otherwise get no gradient and never learn to match
    q, so the prior's gradient is that of the plain KL, passed straight through.  For a
    fixed prior (no gradient) this is exactly :func:`free_bits_kl`.
    """
    floored = free_bits_kl(gaussian_kl(mu, logvar, prior_mu.detach(), prior_logvar.detach()), free_bits)
    if not (prior_mu.requires_grad or prior_logvar.requires_grad):
        return floored
    prior_fit = gaussian_kl(mu.detach(), logvar.detach(), prior_mu, prior_logvar).sum()
    return floored + (prior_fit - prior_fit.detach())


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension, in float32
    (float64 if the inputs are)."""
    dtype = torch.promote_types(torch.promote_types(z.dtype, logvar.dtype), torch.float32)
    z, mu, logvar = z.to(dtype), mu.to(dtype), logvar.to(dtype)
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


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


# --------------------------------------------------------------------------------------
# evaluation: importance-weighted bound, mutual information, active units


def log_importance_weights(
    log_likelihood: Tensor, z: Tensor, mu: Tensor, logvar: Tensor, prior_mu: Tensor, prior_logvar: Tensor
) -> Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for ``z`` of shape ``(batch, K, dim)``.

    ``log_likelihood`` is ``(batch, K)``; the posterior and prior parameters are
    ``(batch, dim)``.
    """
    log_prior = log_normal(z, prior_mu.unsqueeze(1), prior_logvar.unsqueeze(1))
    return log_likelihood.float() + log_prior - log_normal(z, mu.unsqueeze(1), logvar.unsqueeze(1))


def importance_weighted_nll(log_weights: Tensor) -> Tensor:
    """-log (1/K) sum_k w_k per sentence from ``(batch, K)`` log weights (Burda et al. 2016).

    K = 1 gives the single-sample negative ELBO; as K grows the estimate decreases
    towards -log p(x) and is never above the ELBO in expectation.
    """
    log_weights = log_weights.double()
    return -(torch.logsumexp(log_weights, dim=1) - math.log(log_weights.size(1)))


def mutual_information(
    mu: Tensor,
    logvar: Tensor,
    generator: Optional[torch.Generator] = None,
    chunk_size: int = 256,
    z: Optional[Tensor] = None,
) -> float:
    """I_q(x; z) under the aggregate posterior q(z) = (1/N) sum_n q(z|x_n).

    I = E_x E_q(z|x)[log q(z|x) - log q(z)], estimated with one z_n ~ q(z|x_n) per
    sentence and the mixture of all N posteriors of the split for q(z) (He et al.
    2019's estimator, over the whole split rather than per batch).  Both terms use the
    same z_n, so their sampling noise cancels where the posteriors agree; small values
    can still come out slightly negative.  ``z`` gives the z_n (drawn per sentence by
    the caller, so the value does not depend on the order of the rows); otherwise they
    are drawn here from ``generator``.
    """
    mu, logvar = mu.double(), logvar.double()
    n = mu.size(0)
    if n < 2:
        return 0.0
    if z is None:
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        z = mu + torch.exp(0.5 * logvar) * eps
    z = z.to(mu)
    log_q_z_given_x = log_normal(z, mu, logvar)
    log_q_z = []
    for start in range(0, n, chunk_size):
        zc = z[start : start + chunk_size].unsqueeze(1)  # (c, 1, dim) against all n posteriors
        log_q_z.append(torch.logsumexp(log_normal(zc, mu, logvar), dim=1) - math.log(n))
    return float((log_q_z_given_x - torch.cat(log_q_z)).mean())


def posterior_mean_variance(mu_sum: Tensor, mu_sq_sum: Tensor, count: float) -> Tensor:
    """Per-dimension variance over the data of the posterior means, from running sums
    (unbiased, denominator N - 1), so it can be accumulated across batches and workers."""
    if count < 2:
        return torch.zeros_like(mu_sum, dtype=torch.float64)
    mu_sum, mu_sq_sum = mu_sum.double(), mu_sq_sum.double()
    return ((mu_sq_sum - mu_sum.pow(2) / count) / (count - 1)).clamp(min=0.0)


#: Burda et al. (2016) call a unit active when Cov_x(E_q[z_u]) is at least 0.01.
ACTIVE_UNIT_THRESHOLD = 0.01


def active_units(
    mu_sum: Tensor, mu_sq_sum: Tensor, count: float, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> int:
    """Number of latent dimensions whose posterior mean varies across sentences."""
    return int(posterior_mean_variance(mu_sum, mu_sq_sum, count).ge(threshold).sum())
