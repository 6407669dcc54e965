"""What makes a model a VAE, in one place: the posterior head q(z|x), the prior p(z) or
p(z|c), the code z handed to the decoder, and the update count the KL schedule reads.

Every consumer (the decoders, the ``vrae_elbo`` criterion, evaluation, generation) reads
the same output contract, a dict of ``(batch, latent_dim)`` tensors:

* ``z``: the code the decoder conditions on;
* ``mu``, ``logvar``: the posterior q(z|x) (a point mass at a given code);
* ``prior_mu``, ``prior_logvar``: the prior the KL and the importance weights use.

Being a dict of batch-first tensors, it is reordered by fairseq's beam search like any
encoder output (:func:`reorder_latent`).  A new encoder family builds a summary vector
and calls a :class:`LatentLayer`; a conditional VAE gives the layer a
:class:`ConditionalGaussianPrior` and the condition.
"""

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..vae_math import LOGVAR_MIN, clamp_logvar, reparameterize, seeded_gaussian, seeded_normal

LATENT_KEYS = ("z", "mu", "logvar", "prior_mu", "prior_logvar")


def reorder_latent(latent: Dict[str, Tensor], new_order: Tensor) -> Dict[str, Tensor]:
    """The contract for the rows ``new_order`` (beam expansion, finished sentences)."""
    return {key: value.index_select(0, new_order) for key, value in latent.items()}


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I): no parameters, the same for every sentence."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, like: Tensor, condition: Optional[Tensor] = None):
        """(mu, logvar) of the prior for each row of ``like`` (``(batch, latent_dim)``)."""
        zeros = torch.zeros(like.size(0), self.latent_dim, dtype=like.dtype, device=like.device)
        return zeros, zeros

    def sample(self, seeds: Tensor, condition: Optional[Tensor] = None, temperature: float = 1.0) -> Tensor:
        """One code per seed, fixed by the seed whatever the batching (float32, CPU); the
        standard deviation scaled by ``temperature``."""
        return temperature * seeded_normal(seeds, (self.latent_dim,))


class ConditionalGaussianPrior(nn.Module):
    """p(z|c) = N(mu(c), diag(exp(logvar(c)))) from a condition vector c (e.g. the
    pooled source sentence of a conditional VAE), one hidden tanh layer."""

    def __init__(self, condition_dim: int, latent_dim: int, hidden_dim: Optional[int] = None):
        super().__init__()
        self.latent_dim = latent_dim
        hidden_dim = hidden_dim or condition_dim
        self.net = nn.Sequential(nn.Linear(condition_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 2 * latent_dim))

    def forward(self, like: Tensor, condition: Optional[Tensor] = None):
        if condition is None:
            raise ValueError("a conditional prior needs its condition (e.g. the source encoding)")
        mu, logvar = self.net(condition).chunk(2, dim=-1)
        return mu, clamp_logvar(logvar)

    def sample(self, seeds: Tensor, condition: Optional[Tensor] = None, temperature: float = 1.0) -> Tensor:
        mu, logvar = self.forward(condition, condition)
        return seeded_gaussian(mu, logvar, seeds, temperature)


class PosteriorMeanBatchNorm(nn.Module):
    """BN-VAE (Zhu et al. 2020): the posterior means of a batch, normalised per
    dimension, scaled by a fixed ``gamma`` and shifted by a learned ``shift``.

    Over the batch each dimension of mu then has standard deviation exactly gamma, so
    the batch-mean KL to N(0, I) is at least D gamma^2 / 2 whatever the variances: the
    posterior cannot collapse.  Running statistics serve evaluation and generation; a
    training batch of one sentence uses them too.

    The batch statistics are used without BatchNorm's epsilon: with ``var + eps`` under
    the square root the normalised spread is gamma^2 v / (v + eps), which falls with the
    raw variance v, so the KL always has a small gradient that shrinks the raw means.
    Adam rescales that gradient to full-size steps: on Penn Treebank the KL fell to
    0.18 nats by update 100 and the raw variance to 1e-8 by update 475.  Dividing by sqrt(v)
    makes the output independent of the raw scale, so nothing pushes it down.  ``floor``
    takes epsilon's place in torch's batch_norm only to guard a batch whose means are
    all equal: in float32 it vanishes next to any variance above about 1e-13.

    The running statistics that evaluation and generation use are those of the
    posterior means computed without dropout (``reference``, from a second pass of the
    encoder in evaluation mode, without gradient).  The training batch's own means carry
    dropout's noise, whose variance dominates theirs early in training: normalised by
    those statistics, the deterministic means of evaluation had far less spread than
    gamma (Penn Treebank, 40 updates, dropout 0.1: validation KL 5.10 against a bound of
    5.76, and 6.37 with the dropout-free statistics, at the same reconstruction).  The
    statistics start as a cumulative average (the first batch's, then the mean over the
    batches seen) and become an exponential average of rate ``momentum`` once that
    average spans ``1 / momentum`` batches; started at BatchNorm's (0, 1), they kept
    most of that start for tens of updates while the raw means were far smaller
    (validation KL 0.70 there).
    """

    def __init__(self, latent_dim: int, gamma: float, momentum: float = 0.1, floor: float = 1e-20):
        super().__init__()
        self.gamma, self.momentum, self.floor = gamma, momentum, floor
        self.shift = nn.Parameter(torch.zeros(latent_dim))
        self.register_buffer("running_mean", torch.zeros(latent_dim))
        self.register_buffer("running_var", torch.ones(latent_dim))
        self.register_buffer("batches_tracked", torch.zeros((), dtype=torch.long))

    def track(self, reference: Tensor) -> None:
        """Move the running statistics towards those of the means ``reference``."""
        # 1, 1/2, 1/3, ...: a plain average of the batches so far, until it spans 1/momentum
        momentum = max(self.momentum, 1.0 / (int(self.batches_tracked) + 1))
        with torch.no_grad():
            F.batch_norm(reference.float(), self.running_mean, self.running_var,
                         training=True, momentum=momentum, eps=self.floor)
        self.batches_tracked += 1

    def forward(self, mu: Tensor, reference: Optional[Tensor] = None) -> Tensor:
        if self.training and mu.size(0) > 1:
            self.track(mu.detach() if reference is None else reference)
            normalised = F.batch_norm(mu.float(), None, None, training=True, eps=self.floor)
        else:
            normalised = F.batch_norm(mu.float(), self.running_mean, self.running_var,
                                      training=False, eps=self.floor)
        return (self.gamma * normalised + self.shift.float()).to(mu.dtype)

    def upgrade_state_dict_named(self, state_dict, name):
        """Checkpoints from before the count: their statistics are an exponential
        average already, and continue as one."""
        key = f"{name}.batches_tracked" if name else "batches_tracked"
        if key not in state_dict:
            state_dict[key] = torch.tensor(math.ceil(1 / self.momentum), dtype=torch.long)
        return state_dict


class LatentLayer(nn.Module):
    """Gaussian posterior head + prior + the update clock of the KL schedule.

    ``forward(summary)`` maps an encoder's summary vector to the output contract, with z
    a reparameterised posterior sample (``sample=True``) or the posterior mean;
    ``given(z)`` wraps a code chosen from outside (prior samples, interpolation,
    importance samples) in the same contract.  fairseq's ``model.set_num_updates``
    reaches :meth:`set_num_updates`, whatever the task, so the criterion reads the
    schedule's clock here.
    """

    def __init__(
        self, input_dim: int, latent_dim: int, prior: Optional[nn.Module] = None, posterior_bn_gamma: float = 0.0
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.posterior = nn.Linear(input_dim, 2 * latent_dim)
        self.prior = prior if prior is not None else StandardNormalPrior(latent_dim)
        self.mu_norm = PosteriorMeanBatchNorm(latent_dim, posterior_bn_gamma) if posterior_bn_gamma > 0 else None
        self.num_updates = 0
        # length of a schedule that spans the run (cyclical), fixed when training starts
        # and saved with the model, so a resume continues the same schedule
        self.register_buffer("kl_schedule_updates", torch.zeros((), dtype=torch.long))

    def set_num_updates(self, num_updates: int) -> None:
        self.num_updates = num_updates

    def _contract(self, z: Tensor, mu: Tensor, logvar: Tensor, condition: Optional[Tensor]) -> Dict[str, Tensor]:
        prior_mu, prior_logvar = self.prior(mu, condition)
        return {"z": z, "mu": mu, "logvar": logvar, "prior_mu": prior_mu, "prior_logvar": prior_logvar}

    def forward(self, summary: Tensor, sample: bool = True, condition: Optional[Tensor] = None,
                clean_summary: Optional[Callable[[], Tensor]] = None) -> Dict[str, Tensor]:
        """``clean_summary`` recomputes the summary without dropout (see
        :func:`without_dropout`); BN-VAE's running statistics come from it in training."""
        mu, logvar = self.posterior(summary).chunk(2, dim=-1)
        if self.mu_norm is not None:
            reference = None
            if self.training and clean_summary is not None and mu.size(0) > 1:
                with torch.no_grad():
                    reference = self.posterior(clean_summary()).chunk(2, dim=-1)[0]
            mu = self.mu_norm(mu, reference)
        logvar = clamp_logvar(logvar)
        z = reparameterize(mu, logvar) if sample else mu
        return self._contract(z, mu, logvar, condition)

    def given(self, z: Tensor, condition: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """A code chosen from outside, as a point mass (the smallest variance represented)."""
        return self._contract(z, z, torch.full_like(z, LOGVAR_MIN), condition)

    def from_prior(self, like: Tensor, condition: Optional[Tensor] = None, seeds: Optional[Tensor] = None,
                   temperature: float = 1.0) -> Dict[str, Tensor]:
        """The contract of a code from the prior, with the prior network run once: its
        mean, or with ``seeds`` one draw per row (as :meth:`sample_prior`), as a point mass."""
        prior_mu, prior_logvar = self.prior(like, condition)
        z = prior_mu if seeds is None else seeded_gaussian(prior_mu, prior_logvar, seeds, temperature).to(prior_mu.dtype)
        return {"z": z, "mu": z, "logvar": torch.full_like(z, LOGVAR_MIN),
                "prior_mu": prior_mu, "prior_logvar": prior_logvar}

    def sample_prior(self, seeds: Tensor, condition: Optional[Tensor] = None, temperature: float = 1.0) -> Tensor:
        """z ~ p(z) (or p(z|c)) for each seed, reproducible per seed; ``temperature``
        scales the prior's standard deviation (0: its mean; above 1: farther draws)."""
        return self.prior.sample(seeds, condition, temperature)


def without_dropout(module: nn.Module, summarize: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """``summarize`` run with ``module`` (an encoder) in evaluation mode, its training
    flags restored afterwards: the dropout-free summary BN-VAE's statistics track."""

    def run() -> Tensor:
        modes = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            return summarize()
        finally:
            for m, training in modes:
                m.training = training

    return run


def find_latent_layer(model: nn.Module) -> LatentLayer:
    """The latent layer of a (possibly data-parallel wrapped) model."""
    for module in model.modules():
        if isinstance(module, LatentLayer):
            return module
    raise ValueError(
        f"{type(model).__name__} has no latent layer: the vrae_elbo criterion trains "
        f"models built on fairseq_vrae.models.latent.LatentLayer (e.g. --arch vrae_lstm)"
    )
