"""The importance-sampled log p(x): exact where q is the posterior, converging to the truth within its
standard error otherwise, equal in distribution to Pyro's RenyiELBO(alpha=0), and far better than
sampling from the prior."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae.core import analytic, linear_gaussian
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import likelihood as evaluate


@dataclass
class LinearGaussianVAE:
    """p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I) with orthogonal columns of W, so the exact posterior
    is a diagonal Gaussian; q(z|x) is that posterior with its scale multiplied by `inflate`."""

    W: torch.Tensor
    b: torch.Tensor
    sigma: float
    inflate: float = 1.0
    shift: float = 0.0

    @property
    def z_dim(self):
        return self.W.shape[1]

    def sample_q(self, x, eps):
        loc, scale_tril = linear_gaussian.posterior(x, self.W, self.b, self.sigma)
        loc, scale = loc + self.shift, scale_tril.diagonal(dim1=-2, dim2=-1) * self.inflate
        z = analytic.reparameterize(loc, scale, eps)
        return z, analytic.diagonal_normal_log_prob(z, loc, scale)

    def kl_to_prior(self, x):
        return None

    def log_prior(self, z):
        return analytic.standard_normal_log_prob(z)

    def prior_from_noise(self, eps):
        return eps

    def log_likelihood(self, x, z):
        return analytic.gaussian_log_likelihood(x, z @ self.W.T + self.b, self.sigma)


def linear_problem(device, dtype, inflate=1.0, shift=0.0):
    g = torch.Generator().manual_seed(3)
    d, k, n = 10, 3, 20
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    W = q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    sigma = 0.5
    z = torch.randn(n, k, generator=g, dtype=torch.float64)
    x = z @ W.T + b + sigma * torch.randn(n, d, generator=g, dtype=torch.float64)
    model = LinearGaussianVAE(W.to(device, dtype), b.to(device, dtype), sigma, inflate, shift)
    return model, x.to(device, dtype), linear_gaussian.log_marginal(x, W, b, sigma).to(device)


def test_exact_posterior_gives_the_exact_log_likelihood(device, dtype):
    """With q = p(z|x) every weight is p(x): the estimate is exact for any K, with zero standard error."""
    model, x, truth = linear_problem(device, dtype)
    estimate = evaluate.log_likelihood(model, x, num_samples=7)
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(estimate.per_image, truth.cpu().double(), rtol=0, atol=tol)
    assert estimate.standard_error < tol


@pytest.mark.parametrize("num_samples", [200, 5000])
def test_estimate_converges_to_the_truth_within_its_standard_error(num_samples):
    """With a wider, shifted q the per-image estimates scatter around log p(x): the mean error over the
    images lies within 5 of its reported standard errors, and that error shrinks like 1/sqrt(K)."""
    model, x, truth = linear_problem("cpu", torch.float64, inflate=1.6, shift=0.3)
    estimate = evaluate.log_likelihood(model, x, num_samples=num_samples, seed=1, max_rows=1000)
    error = estimate.value - truth.mean().item()
    assert abs(error) < 5 * estimate.standard_error
    assert estimate.standard_error < 0.5 / math.sqrt(num_samples)  # the weights' relative spread here is below 0.5


def test_chunking_does_not_change_the_estimate():
    model, x, _ = linear_problem("cpu", torch.float64, inflate=1.3)
    whole = evaluate.log_likelihood(model, x, num_samples=300, seed=2, max_rows=10**7)
    # one image and 7 samples at a time draws the same noise in another order, so compare statistically
    small = evaluate.log_likelihood(model, x, num_samples=300, seed=2, max_rows=7)
    assert abs(whole.value - small.value) < 5 * math.hypot(whole.standard_error, small.standard_error)


def test_matches_pyro_renyi_elbo_in_distribution():
    """Pyro's RenyiELBO(alpha=0, K) on the unscaled model is the same estimator: both estimates agree
    within 5 standard errors of their difference, on a VAE with a tanh 784-200-200-50 shape shrunk."""
    torch.manual_seed(0)
    vae = VAE(ModelConfig(hidden=(32, 32), z_dim=4, activation="tanh")).double()
    x = torch.bernoulli(torch.rand(30, 784, dtype=torch.float64))
    k = 500
    ours = evaluate.log_likelihood(vae, x, num_samples=k, seed=3)

    def unscaled(fn):
        def run(x):
            with poutine.scale(scale=float(x.shape[0])):
                fn(x)

        return run

    pyro.set_rng_seed(4)
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    theirs = -renyi.loss(unscaled(vae.model), unscaled(vae.guide), x) / x.shape[0]
    assert abs(ours.value - theirs) < 5 * math.sqrt(2) * ours.standard_error


def test_prior_sampling_is_far_below_importance_sampling_on_a_trained_model():
    """The naive estimate log (1/K) sum p(x|z_k), z_k ~ p(z), after a little training: much lower than the
    importance-sampled estimate at the same K, far beyond both standard errors."""
    torch.manual_seed(0)
    vae = VAE(ModelConfig(hidden=(64,), z_dim=8))
    prototypes = torch.where(torch.rand(5, 784) < 0.5, 0.05, 0.95)  # five clusters: a latent worth learning
    x = torch.bernoulli(prototypes[torch.arange(200) % 5])
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        eps = torch.randn(1, x.shape[0], 8)
        (-analytic.elbo_analytic_kl(vae, x, eps).mean()).backward()
        optimizer.step()
    guided = evaluate.log_likelihood(vae, x[:50], num_samples=500)
    naive = evaluate.log_likelihood(vae, x[:50], num_samples=500, proposal="prior")
    gap = guided.value - naive.value
    assert gap > 5 * math.hypot(guided.standard_error, naive.standard_error) and gap > 1.0


def test_bad_arguments_are_refused():
    model, x, _ = linear_problem("cpu", torch.float64)
    with pytest.raises(ConfigError, match="at least 1"):
        evaluate.log_likelihood(model, x, num_samples=0)
    with pytest.raises(ConfigError, match="proposal"):
        evaluate.log_likelihood(model, x, proposal="posterior")
