import math

import pytest
import torch

from fairseq_vrae import vae_math


def standard_normal_prior(like):
    return torch.zeros_like(like), torch.zeros_like(like)


def test_gaussian_kl_matches_monte_carlo_against_any_diagonal_prior():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5).clamp(-2, 2)
    prior_mu, prior_logvar = torch.randn(3, 5), torch.randn(3, 5).clamp(-1, 1)
    closed = vae_math.gaussian_kl(mu, logvar, prior_mu, prior_logvar).sum(-1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 3, 5)
    estimate = (vae_math.log_normal(z, mu, logvar) - vae_math.log_normal(z, prior_mu, prior_logvar)).mean(0)
    assert torch.allclose(closed, estimate, atol=0.03), (closed, estimate)


def test_standard_normal_prior_gives_the_familiar_closed_form():
    torch.manual_seed(4)
    mu, logvar = torch.randn(6, 32) * 2, torch.randn(6, 32) * 3
    familiar = 0.5 * (mu.double().pow(2) + logvar.double().exp() - 1 - logvar.double())
    general = vae_math.gaussian_kl(mu, logvar, *standard_normal_prior(mu))
    assert torch.allclose(general.double(), familiar, rtol=1e-6, atol=1e-6)
    # importance weights: log p(x|z) + log N(z; 0, I) - log q(z|x)
    z = mu.unsqueeze(1) + torch.randn(6, 4, 32)
    log_likelihood = -torch.rand(6, 4) * 40
    log_standard = -0.5 * (math.log(2 * math.pi) + z.double().pow(2)).sum(-1)
    expected = log_likelihood.double() + log_standard - vae_math.log_normal(z.double(), mu.double().unsqueeze(1), logvar.double().unsqueeze(1))
    weights = vae_math.log_importance_weights(log_likelihood, z, mu, logvar, *standard_normal_prior(mu))
    assert torch.allclose(weights.double(), expected, rtol=1e-6, atol=1e-4)


def test_gaussian_kl_is_zero_only_at_the_prior():
    torch.manual_seed(5)
    prior_mu, prior_logvar = torch.randn(2, 4), torch.randn(2, 4)
    zero = vae_math.gaussian_kl(prior_mu, prior_logvar, prior_mu, prior_logvar)
    assert torch.allclose(zero, torch.zeros(2, 4), atol=1e-6)
    assert (vae_math.gaussian_kl(prior_mu + 0.1, prior_logvar, prior_mu, prior_logvar) > 0).all()
    assert (vae_math.gaussian_kl(prior_mu, prior_logvar + 0.1, prior_mu, prior_logvar) > 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_float32_kl(dtype):
    torch.manual_seed(1)
    mu, logvar = torch.randn(8, 32) * 3, torch.randn(8, 32) * 4
    low = vae_math.gaussian_kl(mu.to(dtype), logvar.to(dtype), *standard_normal_prior(mu.to(dtype)))
    assert low.dtype == torch.float32
    reference = vae_math.gaussian_kl(mu.to(dtype).float(), logvar.to(dtype).float(), *standard_normal_prior(mu))
    assert torch.allclose(low, reference)


def test_half_precision_inputs_that_overflow_in_half_arithmetic_give_a_finite_kl():
    # exp(11.5) ~ 98,700 and 300^2 = 90,000 are beyond fp16's largest value (65,504)
    mu = torch.tensor([[300.0, 0.0]], dtype=torch.float16)
    logvar = torch.tensor([[0.0, 11.5]], dtype=torch.float16)
    assert torch.isinf(mu.pow(2)).any() and torch.isinf(logvar.exp()).any()  # what half maths would do
    kl = vae_math.gaussian_kl(mu, logvar, *standard_normal_prior(mu))
    expected = torch.tensor([[0.5 * 300.0**2, 0.5 * (math.exp(11.5) - 1 - 11.5)]])
    assert torch.isfinite(kl).all()
    assert torch.allclose(kl, expected, rtol=1e-5)


def test_reparameterize_is_differentiable_and_has_the_right_moments():
    torch.manual_seed(2)
    mu = torch.tensor([1.5, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], requires_grad=True)
    z = vae_math.reparameterize(mu.expand(100_000, 2), logvar.expand(100_000, 2))
    assert torch.allclose(z.mean(0), mu.detach(), atol=0.03)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 2.0]), atol=0.03)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None
    assert torch.all(mu.grad != 0) and torch.all(logvar.grad != 0)


def test_free_bits_floors_the_batch_mean_per_dimension():
    kl = torch.tensor([[0.0, 2.0, 0.1], [0.2, 4.0, 0.1]])  # batch means: 0.1, 3.0, 0.1
    assert vae_math.free_bits_kl(kl, 0.5).item() == pytest.approx(2 * (0.5 + 3.0 + 0.5))
    assert vae_math.free_bits_kl(kl, 0.0).item() == pytest.approx(kl.sum().item())


def test_logistic_schedule():
    w = lambda t: vae_math.kl_weight("logistic", t, steepness=0.01, midpoint=1000)
    assert w(1000) == pytest.approx(0.5)
    assert w(0) == pytest.approx(1 / (1 + math.exp(10)))
    assert w(3000) == pytest.approx(1 / (1 + math.exp(-20)))
    assert vae_math.kl_weight("logistic", 10**6, steepness=0.01, midpoint=1000, final_weight=0.8) == pytest.approx(0.8)
    assert vae_math.kl_weight("logistic", -10**6, steepness=1.0, midpoint=0) == 0.0


def test_linear_schedule():
    w = lambda t: vae_math.kl_weight("linear", t, warmup_updates=200)
    assert [w(0), w(50), w(100), w(200), w(10_000)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_cyclical_schedule_follows_fu_et_al():
    w = lambda t: vae_math.kl_weight("cyclical", t, total_updates=400, cycles=4, rising=0.5)
    # period 100: rise over 50 updates, plateau for 50, restart
    assert [w(0), w(25), w(50), w(99), w(100), w(125), w(399), w(400), w(5000)] == [
        0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0,
    ]
    with pytest.raises(ValueError, match="max-update"):
        vae_math.kl_weight("cyclical", 3, total_updates=0)


def test_constant_schedule_and_unknown_name():
    assert vae_math.kl_weight("constant", 12345, final_weight=0.3) == 0.3
    with pytest.raises(ValueError, match="unknown KL schedule"):
        vae_math.kl_weight("exponential", 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_float32_densities_and_importance_weights(dtype):
    torch.manual_seed(3)
    mu, logvar = torch.randn(4, 16), torch.randn(4, 16).clamp(-3, 3)
    z = mu.unsqueeze(1) + torch.randn(4, 5, 16)
    log_likelihood = -torch.rand(4, 5) * 50
    prior = standard_normal_prior(mu)
    low = vae_math.log_importance_weights(
        log_likelihood.to(dtype), z.to(dtype), mu.to(dtype), logvar.to(dtype), prior[0].to(dtype), prior[1].to(dtype)
    )
    reference = vae_math.log_importance_weights(
        log_likelihood.to(dtype).float(), z.to(dtype).float(), mu.to(dtype).float(), logvar.to(dtype).float(), *prior
    )
    assert low.dtype == torch.float32
    assert torch.allclose(low, reference, atol=1e-4)
    sample = vae_math.reparameterize(mu.to(dtype), logvar.to(dtype))
    assert sample.dtype == dtype and torch.isfinite(sample).all()


def test_log_variance_clamp_keeps_exp_finite_in_fp16():
    extreme = torch.tensor([-1e4, -30.0, 0.0, 30.0, 1e4], dtype=torch.float16)
    clamped = vae_math.clamp_logvar(extreme)
    assert clamped.min() == vae_math.LOGVAR_MIN and clamped.max() == vae_math.LOGVAR_MAX
    assert torch.isfinite(clamped.exp()).all()  # computed in fp16 itself
    assert torch.isfinite((0.5 * clamped).exp()).all()


def test_free_bits_below_the_floor_still_train_a_learned_prior_but_spare_the_posterior():
    from fairseq_vrae.vae_math import free_bits_kl, free_bits_kl_to_prior, gaussian_kl

    torch.manual_seed(0)
    mu = (0.05 * torch.randn(6, 4)).requires_grad_()
    logvar = (-0.01 * torch.rand(6, 4)).requires_grad_()
    prior_mu = (0.05 * torch.randn(6, 4)).requires_grad_()
    prior_logvar = torch.zeros(6, 4, requires_grad=True)
    term = free_bits_kl_to_prior(mu, logvar, prior_mu, prior_logvar, free_bits=0.5)
    plain = free_bits_kl(gaussian_kl(mu, logvar, prior_mu, prior_logvar), 0.5)
    assert torch.allclose(term, plain)  # the value is the floored KL: 4 dims x 0.5 x 6 sentences
    assert math.isclose(float(term), 12.0, rel_tol=1e-6)
    term.backward()
    assert mu.grad.abs().sum() == 0 and logvar.grad.abs().sum() == 0  # the floor spares q
    expected_prior_grad = torch.autograd.grad(gaussian_kl(mu.detach(), logvar.detach(), prior_mu, prior_logvar).sum(), prior_mu)[0]
    assert prior_mu.grad.abs().sum() > 0 and torch.allclose(prior_mu.grad, expected_prior_grad)
    # a fixed prior: exactly free_bits_kl
    fixed = free_bits_kl_to_prior(mu.detach(), logvar.detach(), torch.zeros(6, 4), torch.zeros(6, 4), 0.01)
    assert torch.equal(fixed, free_bits_kl(gaussian_kl(mu.detach(), logvar.detach(), torch.zeros(6, 4), torch.zeros(6, 4)), 0.01))


def test_sentence_seeds_give_each_sentence_and_draw_its_own_seed():
    from fairseq_vrae.vae_math import sentence_seeds

    ids = torch.tensor([4, 0, 9])
    assert sentence_seeds(7, ids).tolist() == [7 * 1_000_003 + i for i in (4, 0, 9)]
    assert sentence_seeds(7, ids, draws=2).tolist() == [7 * 1_000_003 + i * 2 + k for i in (4, 0, 9) for k in (0, 1)]
    assert len(set(sentence_seeds(7, torch.arange(50), draws=3).tolist())) == 150
