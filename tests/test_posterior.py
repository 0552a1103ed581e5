"""The 2-D ground truth: grid posterior and quadrature log p(x), exact on a linear-Gaussian model and in
agreement with importance sampling on a trained VAE; the local guide closes part of the ELBO's gap."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from conftest import trained_2d_vae

from pyro_vae.core import analytic, linear_gaussian
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.evaluation import posterior
from pyro_vae.training import fits


@dataclass
class LinearGaussian2D:
    W: torch.Tensor
    b: torch.Tensor
    sigma: float
    z_dim: int = 2

    def log_likelihood(self, x, z):
        return analytic.gaussian_log_likelihood(x, z @ self.W.T + self.b, self.sigma)

    def log_prior(self, z):
        return analytic.standard_normal_log_prob(z)


def test_grid_is_exact_on_the_linear_gaussian_model():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 2, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = (
        torch.randn(4, 2, generator=g, dtype=torch.float64) @ W.T
        + b
        + 0.8 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    )
    grid = posterior.grid_posterior(LinearGaussian2D(W, b, 0.8), x, limit=6.0, points=241)
    torch.testing.assert_close(grid.log_marginal, linear_gaussian.log_marginal(x, W, b, 0.8), rtol=0, atol=1e-8)
    # the grid's posterior mean is Bayes' rule's
    h = (grid.axis[1] - grid.axis[0]).item()
    density = grid.log_density.exp()
    mean = torch.stack([(density.sum(2) * grid.axis).sum(1), (density.sum(1) * grid.axis).sum(1)], -1) * h * h
    exact_mean, _ = linear_gaussian.posterior(x, W, b, 0.8)
    torch.testing.assert_close(mean, exact_mean, rtol=0, atol=1e-8)


def test_grid_needs_two_latent_dimensions():
    with pytest.raises(ConfigError, match="2-D"):
        posterior.grid_posterior(VAE(ModelConfig(hidden=(8,), z_dim=3)), torch.zeros(1, 784))


@pytest.fixture(scope="module")
def trained_2d():
    """A 2-D VAE after 300 steps on the default data, and 12 binarized test images."""
    return trained_2d_vae(steps=300, images=12)


def test_grid_log_likelihood_agrees_with_importance_sampling_on_a_trained_vae(trained_2d):
    """Quadrature against log (1/K) sum w_k, K = 5,000, averaged over the images: within 5 of the
    estimate's standard errors; and the ELBO below both."""
    vae, x = trained_2d
    grid = posterior.grid_posterior(vae, x, points=201)
    sampled = evaluate.log_likelihood(vae, x, num_samples=5000, seed=1)
    assert abs(grid.log_marginal.mean().item() - sampled.value) < 5 * sampled.standard_error
    elbo = -evaluate.negative_elbo(vae, x, num_samples=200)
    assert elbo < sampled.value < grid.log_marginal.mean().item() + 5 * sampled.standard_error


def test_local_guide_improves_on_the_encoder_but_stays_below_log_p(trained_2d):
    vae, x = trained_2d
    grid = posterior.grid_posterior(vae, x, points=201)
    _, _, local = fits.fit_local_guide(vae, x, steps=300)
    with torch.no_grad():
        eps = torch.randn(1000, x.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        amortized = analytic.elbo_analytic_kl(vae, x, eps)
    assert local.mean() > amortized.mean()  # the amortization gap is positive
    assert (local < grid.log_marginal + 0.05).all()  # and no ELBO exceeds log p(x)
    assert all(p.requires_grad for p in vae.parameters())  # the decoder was only frozen while fitting
