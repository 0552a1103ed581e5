"""log p(x) = ELBO(q) + KL(q || p(z|x)) on the linear-Gaussian model, where every term is exact."""

from __future__ import annotations

import pytest
import torch
import torch.distributions as td
from conftest import rtol_for

from pyro_vae.core import analytic, linear_gaussian


@pytest.fixture
def problem(device, dtype):
    g = torch.Generator().manual_seed(7)
    d, k, n = 12, 3, 16
    W = torch.randn(d, k, generator=g, dtype=torch.float64).to(device, dtype)
    b = torch.randn(d, generator=g, dtype=torch.float64).to(device, dtype)
    sigma = 0.7
    z = torch.randn(n, k, generator=g, dtype=torch.float64).to(device, dtype)
    x = z @ W.T + b + sigma * torch.randn(n, d, generator=g, dtype=torch.float64).to(device, dtype)
    return x, W, b, sigma


def random_gaussians(n: int, k: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(8)
    loc = torch.randn(n, k, generator=g, dtype=torch.float64)
    L = torch.tril(0.3 * torch.randn(n, k, k, generator=g, dtype=torch.float64), -1) + torch.diag_embed(
        torch.rand(n, k, generator=g, dtype=torch.float64) + 0.2
    )
    return loc.to(device, dtype), L.to(device, dtype)


def test_log_marginal_matches_torch(problem):
    x, W, b, sigma = problem
    cov = W @ W.T + sigma**2 * torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
    expected = td.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)
    torch.testing.assert_close(linear_gaussian.log_marginal(x, W, b, sigma), expected, rtol=rtol_for(x.dtype), atol=0)


def test_log_marginal_is_elbo_plus_kl_to_posterior(problem):
    x, W, b, sigma = problem
    loc, L = random_gaussians(x.shape[0], W.shape[1], x.device, x.dtype)
    post_loc, post_L = linear_gaussian.posterior(x, W, b, sigma)
    elbo = linear_gaussian.elbo(x, W, b, sigma, loc, L)
    gap = analytic.kl_normal_normal(loc, L, post_loc, post_L)
    torch.testing.assert_close(elbo + gap, linear_gaussian.log_marginal(x, W, b, sigma), rtol=rtol_for(x.dtype), atol=0)
    # Jensen's gap: strictly positive away from the posterior
    assert (gap > 1e-3).all()
    assert (elbo < linear_gaussian.log_marginal(x, W, b, sigma)).all()


def test_elbo_is_tight_at_the_exact_posterior(problem):
    x, W, b, sigma = problem
    post_loc, post_L = linear_gaussian.posterior(x, W, b, sigma)
    log_px = linear_gaussian.log_marginal(x, W, b, sigma)
    torch.testing.assert_close(
        linear_gaussian.elbo(x, W, b, sigma, post_loc, post_L), log_px, rtol=rtol_for(x.dtype), atol=0
    )


def test_posterior_is_bayes_rule(problem):
    """p(z|x) p(x) = p(x|z) p(z) at random z: checks the posterior's mean and covariance."""
    x, W, b, sigma = problem
    post_loc, post_L = linear_gaussian.posterior(x, W, b, sigma)
    z = torch.randn(x.shape[0], W.shape[1], dtype=x.dtype, device=x.device)
    log_post = td.MultivariateNormal(post_loc, scale_tril=post_L).log_prob(z)
    log_joint = analytic.gaussian_log_likelihood(x, z @ W.T + b, sigma) + analytic.standard_normal_log_prob(z)
    torch.testing.assert_close(
        log_post + linear_gaussian.log_marginal(x, W, b, sigma), log_joint, rtol=rtol_for(x.dtype), atol=0
    )
