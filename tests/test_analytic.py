"""Each closed form against torch.distributions (exact) and against its Monte Carlo estimate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td
from conftest import rtol_for

from pyro_vae.core import analytic


def random_scale_tril(batch: int, d: int, generator, dtype, device, log10_range: float = 2.0) -> torch.Tensor:
    """Cholesky factors of Q diag(lambda) Q^T with eigenvalues lambda spread over 10^(+-log10_range)."""
    q, _ = torch.linalg.qr(torch.randn(batch, d, d, generator=generator, dtype=torch.float64))
    eig = 10 ** torch.linspace(-log10_range, log10_range, d, dtype=torch.float64)
    sigma = q @ torch.diag_embed(eig) @ q.transpose(-1, -2)
    return torch.linalg.cholesky(sigma).to(dtype=dtype, device=device)


def standard(d: int, dtype, device) -> td.Distribution:
    return td.MultivariateNormal(torch.zeros(d, dtype=dtype, device=device), torch.eye(d, dtype=dtype, device=device))


@pytest.mark.parametrize("log10_sigma", [(-4.0, -2.0), (-1.0, 1.0), (2.0, 4.0), (-4.0, 4.0)])
def test_kl_diagonal_matches_torch(device, dtype, log10_sigma):
    g = torch.Generator().manual_seed(0)
    lo, hi = log10_sigma
    loc = torch.randn(64, 10, generator=g, dtype=torch.float64).to(device, dtype)
    scale = (10 ** (lo + (hi - lo) * torch.rand(64, 10, generator=g, dtype=torch.float64))).to(device, dtype)
    expected = td.kl_divergence(
        td.Independent(td.Normal(loc, scale), 1), td.Independent(td.Normal(0 * loc, 1 + 0 * loc), 1)
    )
    torch.testing.assert_close(
        analytic.kl_diagonal_normal_standard_normal(loc, scale), expected, rtol=rtol_for(dtype), atol=0
    )


@pytest.mark.parametrize("log10_range", [0.5, 4.0])
def test_kl_full_covariance_matches_torch(device, dtype, log10_range):
    g = torch.Generator().manual_seed(1)
    d = 6
    loc = torch.randn(32, d, generator=g, dtype=torch.float64).to(device, dtype)
    L = random_scale_tril(32, d, g, dtype, device, log10_range)
    expected = td.kl_divergence(td.MultivariateNormal(loc, scale_tril=L), standard(d, dtype, device))
    torch.testing.assert_close(analytic.kl_normal_standard_normal(loc, L), expected, rtol=rtol_for(dtype), atol=0)


@pytest.mark.parametrize("log10_range", [0.5, 4.0])
def test_kl_general_matches_torch(device, dtype, log10_range):
    g = torch.Generator().manual_seed(2)
    d = 6
    loc_q, loc_p = (torch.randn(32, d, generator=g, dtype=torch.float64).to(device, dtype) for _ in range(2))
    L_q = random_scale_tril(32, d, g, dtype, device, log10_range)
    L_p = random_scale_tril(32, d, g, dtype, device, log10_range)
    expected = td.kl_divergence(
        td.MultivariateNormal(loc_q, scale_tril=L_q), td.MultivariateNormal(loc_p, scale_tril=L_p)
    )
    torch.testing.assert_close(
        analytic.kl_normal_normal(loc_q, L_q, loc_p, L_p), expected, rtol=rtol_for(dtype), atol=0
    )


def test_kl_general_reduces_to_standard_and_to_zero(device, dtype):
    g = torch.Generator().manual_seed(3)
    loc = torch.randn(8, 5, generator=g, dtype=torch.float64).to(device, dtype)
    L = random_scale_tril(8, 5, g, dtype, device)
    eye = torch.eye(5, dtype=dtype, device=device)
    torch.testing.assert_close(
        analytic.kl_normal_normal(loc, L, torch.zeros_like(loc), eye),
        analytic.kl_normal_standard_normal(loc, L),
        rtol=rtol_for(dtype),
        atol=0,
    )
    assert analytic.kl_normal_normal(loc, L, loc, L).abs().max() < 100 * torch.finfo(dtype).eps


def monte_carlo_kl(q: td.Distribution, p: td.Distribution, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(q || p) = E_q[log q(z) - log p(z)]: the sample mean over n draws and its standard error."""
    z = q.sample((n,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    return log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)


def test_kl_forms_match_monte_carlo(device, dtype):
    torch.manual_seed(4)
    d, n = 4, 200_000
    loc_q, loc_p = torch.randn(3, d, dtype=dtype, device=device), torch.randn(3, d, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(4)
    L_q, L_p = (random_scale_tril(3, d, g, dtype, device, 0.5) for _ in range(2))
    scale = L_q.diagonal(dim1=-2, dim2=-1)
    cases = [
        (
            analytic.kl_diagonal_normal_standard_normal(loc_q, scale),
            td.Independent(td.Normal(loc_q, scale), 1),
            standard(d, dtype, device),
        ),
        (
            analytic.kl_normal_standard_normal(loc_q, L_q),
            td.MultivariateNormal(loc_q, scale_tril=L_q),
            standard(d, dtype, device),
        ),
        (
            analytic.kl_normal_normal(loc_q, L_q, loc_p, L_p),
            td.MultivariateNormal(loc_q, scale_tril=L_q),
            td.MultivariateNormal(loc_p, scale_tril=L_p),
        ),
    ]
    for exact, q, p in cases:
        estimate, standard_error = monte_carlo_kl(q, p, n)
        assert ((estimate - exact).abs() < 5 * standard_error).all(), (estimate, exact, standard_error)


def test_log_likelihoods_match_torch(device, dtype):
    g = torch.Generator().manual_seed(5)
    logits = (4 * torch.randn(16, 30, generator=g, dtype=torch.float64)).to(device, dtype)
    binary = torch.bernoulli(torch.full((16, 30), 0.4, dtype=torch.float64), generator=g).to(device, dtype)
    grey = torch.rand(16, 30, generator=g, dtype=torch.float64).to(device, dtype)
    rtol = rtol_for(dtype)
    torch.testing.assert_close(
        analytic.bernoulli_log_likelihood(binary, logits),
        td.Bernoulli(logits=logits).log_prob(binary).sum(-1),
        rtol=rtol,
        atol=0,
    )
    mean = torch.sigmoid(logits)
    for sigma in (1e-3, 0.1, 3.0):
        expected = td.Normal(mean, sigma).log_prob(grey).sum(-1)
        torch.testing.assert_close(analytic.gaussian_log_likelihood(grey, mean, sigma), expected, rtol=rtol, atol=0)
    expected = td.ContinuousBernoulli(logits=logits).log_prob(grey).sum(-1)
    torch.testing.assert_close(analytic.continuous_bernoulli_log_likelihood(grey, logits), expected, rtol=rtol, atol=0)


def test_continuous_bernoulli_normalizer_is_stable_near_one_half():
    """Near lambda = 1/2 the closed form l / tanh(l / 2) is 0/0; the series must agree with a
    high-precision evaluation, with no loss of accuracy, and be continuous across the switch."""
    import mpmath

    mpmath.mp.dps = 50
    logits = torch.tensor([0.0, 1e-12, -1e-8, 1e-5, 3e-3, -9.99e-3, 1.001e-2, 0.3, -5.0, 40.0], dtype=torch.float64)
    got = analytic.continuous_bernoulli_log_normalizer(logits)
    exact = [
        math.log(2) if l == 0 else float(mpmath.log(mpmath.mpf(l) / mpmath.tanh(mpmath.mpf(l) / 2)))
        for l in logits.tolist()
    ]
    torch.testing.assert_close(got, torch.tensor(exact, dtype=torch.float64), rtol=1e-14, atol=1e-15)
    # float32 too: finite and close to log 2 at the midpoint
    got32 = analytic.continuous_bernoulli_log_normalizer(torch.tensor([0.0, 1e-7, -1e-3], dtype=torch.float32))
    torch.testing.assert_close(got32, torch.full((3,), math.log(2), dtype=torch.float32), rtol=1e-6, atol=0)


def test_reparameterize_is_loc_plus_scale_times_eps(device, dtype):
    loc = torch.randn(5, 3, dtype=dtype, device=device)
    scale = torch.rand(5, 3, dtype=dtype, device=device) + 0.1
    eps = torch.randn(5, 3, dtype=dtype, device=device)
    assert torch.equal(analytic.reparameterize(loc, scale, eps), loc + scale * eps)
