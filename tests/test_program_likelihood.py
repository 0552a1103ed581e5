"""log p(x) of any Pyro program, read from traces (`evaluation.program_likelihood`): on the built-in VAE it is
the hand-derived path on the same draws (float64, 1e-10), on a linear-Gaussian program it meets the closed form
within its standard error, and a program it cannot read per image is refused naming the site."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vae.core import analytic
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.evaluation.program_likelihood import (
    program_elbo_terms,
    program_log_likelihood,
    trace_elbo_terms,
    trace_log_weights,
    traces,
)

LAYERS = {1: ModelConfig(hidden=(16,), z_dim=3), 2: ModelConfig(hidden=(16,), z_dim=3, stochastic_layers=2, z2_dim=2)}


def traces_at(vae: VAE, x: torch.Tensor, z: torch.Tensor) -> tuple:
    """(model trace, guide trace) of the built-in VAE with its latent sites at the hand path's draws z (K, batch,
    z_dim): z, or z1 and z2 with two layers."""
    sites = {"z": z} if vae.top is None else {"z1": z[..., : vae.config.z_dim], "z2": z[..., vae.config.z_dim :]}
    with pyro.plate("importance_samples", z.shape[0], dim=-2):
        guide_trace = poutine.trace(poutine.condition(vae.guide, data=sites)).get_trace(x)
        model_trace = poutine.trace(poutine.condition(vae.model, data=sites)).get_trace(x)
    return model_trace, guide_trace


@pytest.mark.parametrize("layers", [1, 2])
def test_the_generic_log_weights_are_the_hand_derived_ones_on_the_built_in_vae(layers):
    """The same draws z = g(eps; x) given to the guide's sites: log p(x, z) - log q(z|x) read from Pyro's traces
    equals `analytic.log_importance_weights` to 1e-10 in float64, for one and two stochastic layers."""
    torch.manual_seed(0)
    vae = VAE(LAYERS[layers]).double()
    x = torch.bernoulli(torch.rand(6, 784, dtype=torch.float64))
    eps = torch.randn(4, 6, vae.z_dim, dtype=torch.float64)
    z, _ = vae.sample_q(x, eps)
    generic = trace_log_weights(*traces_at(vae, x, z), images=6)
    hand = analytic.log_importance_weights(vae, x, eps)
    assert generic.shape == (4, 6) and torch.allclose(generic, hand, rtol=0, atol=1e-10)


def test_the_generic_estimate_agrees_with_the_hand_derived_one_within_their_standard_errors():
    """Different draws, the same estimand: the two log p(x) estimates on a VAE differ by less than 5 standard
    errors of their difference."""
    torch.manual_seed(1)
    vae = VAE(LAYERS[1]).double()
    x = torch.bernoulli(torch.rand(8, 784, dtype=torch.float64))
    hand = evaluate.log_likelihood(vae, x, 2000, seed=0)
    generic = program_log_likelihood(vae.model, vae.guide, (x,), 2000, seed=1, max_rows=4000)
    spread = math.hypot(hand.standard_error, generic.standard_error)
    assert abs(hand.value - generic.value) < 5 * spread
    assert generic.per_image.shape == (8,) and torch.isfinite(generic.pareto_k).all()


def linear_gaussian(x: torch.Tensor, w: torch.Tensor, sigma: float) -> tuple:
    """z ~ N(0, I_2), x ~ N(W z, sigma^2 I_3) per image, the guide q(z|x) = N(0.5 W^T x, 0.8^2 I): a program
    whose log p(x) = log N(x; 0, W W^T + sigma^2 I) is exact."""

    def model(x):
        with pyro.plate("images", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, sigma).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("images", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(0.5 * x @ w, 0.8).to_event(1))

    covariance = w @ w.T + sigma**2 * torch.eye(3, dtype=x.dtype)
    exact = dist.MultivariateNormal(torch.zeros(3, dtype=x.dtype), covariance).log_prob(x)
    return model, guide, exact


def test_a_linear_gaussian_program_meets_its_closed_form_within_five_standard_errors():
    torch.manual_seed(2)
    w = torch.randn(3, 2, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64) * 1.5
    model, guide, exact = linear_gaussian(x, w, 0.7)
    estimate = program_log_likelihood(model, guide, (x,), 20_000, seed=3)
    assert abs(estimate.value - exact.mean().item()) < 5 * estimate.standard_error
    per_image_se = estimate.per_image_variance.sqrt()
    assert ((estimate.per_image - exact).abs() < 5 * per_image_se).all()


def test_the_draws_are_reproducible_and_leave_the_global_random_state_alone():
    torch.manual_seed(4)
    w, x = torch.randn(3, 2, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    model, guide, _ = linear_gaussian(x, w, 0.7)
    state = torch.get_rng_state()
    one, again, other = (program_log_likelihood(model, guide, (x,), 100, seed=s, max_rows=40) for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(one.per_image, again.per_image) and not torch.equal(one.per_image, other.per_image)


def test_a_site_outside_the_plate_over_the_images_is_refused_naming_it():
    def model(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))  # global: no density per image
        with pyro.plate("images", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(torch.zeros(3), scale.unsqueeze(-1)).to_event(1), obs=x)

    def guide(x):
        pyro.sample("scale", dist.LogNormal(0.0, 0.5))

    with pytest.raises(ConfigError, match="site 'scale' has a log-density of shape .* not one per image"):
        program_log_likelihood(model, guide, (torch.randn(4, 3),), 10)


def test_a_program_with_a_discrete_latent_is_exact_when_its_guide_is_the_posterior():
    """y ~ Cat(pi) over 3 components, z ~ N(mu_y, I), x ~ N(W z, sigma^2 I): log p(x) = log sum_y pi_y
    N(x; W mu_y, W W^T + sigma^2 I). With the exact posterior as the guide (q(y|x) the components' posterior,
    q(z|x, y) the Gaussian one), every weight is p(x): the estimate from the program's traces (two latent sites,
    one discrete) is exact to rounding, with no spread, whatever K."""
    torch.manual_seed(6)
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    mu = torch.randn(3, 2, dtype=torch.float64) * 2
    w, sigma = torch.randn(3, 2, dtype=torch.float64), 0.6
    x = torch.randn(6, 3, dtype=torch.float64) * 2
    components = dist.MultivariateNormal(mu @ w.T, w @ w.T + sigma**2 * torch.eye(3, dtype=torch.float64))
    joint = pi.log() + components.log_prob(x.unsqueeze(1))  # (images, components): log pi_y + log p(x|y)
    exact = torch.logsumexp(joint, dim=-1)
    posterior_covariance = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + w.T @ w / sigma**2)

    def model(x):
        with pyro.plate("images", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(pi))
            z = pyro.sample("z", dist.Normal(mu[y], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, sigma).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("images", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(logits=joint))
            mean = (mu[y] + x @ w / sigma**2) @ posterior_covariance.T
            pyro.sample("z", dist.MultivariateNormal(mean, posterior_covariance))

    estimate = program_log_likelihood(model, guide, (x,), 50, seed=7)
    assert torch.allclose(estimate.per_image, exact, rtol=0, atol=1e-10)
    assert estimate.standard_error < 1e-10


@pytest.mark.parametrize("layers", [1, 2])
def test_the_elbos_two_terms_read_from_traces_are_the_hand_derived_ones(layers):
    """On the same draws: the distortion -log p(x|z) and the rate log q(z|x) - log p(z) per (sample, image)
    read from the traces equal the VAE's hand-derived ones to 1e-10 in float64."""
    torch.manual_seed(8)
    vae = VAE(LAYERS[layers]).double()
    x = torch.bernoulli(torch.rand(5, 784, dtype=torch.float64))
    eps = torch.randn(3, 5, vae.z_dim, dtype=torch.float64)
    z, log_q = vae.sample_q(x, eps)
    distortion, rate = trace_elbo_terms(*traces_at(vae, x, z), images=5)
    assert torch.allclose(distortion, -vae.log_likelihood(x, z), rtol=0, atol=1e-10)
    assert torch.allclose(rate, log_q - vae.log_prior(z), rtol=0, atol=1e-10)


def test_a_programs_test_loss_estimates_the_vaes_exact_kl_and_distortion():
    """Many draws: the rate read from traces meets the closed-form KL, and the total the hand-derived -ELBO,
    within 5 standard errors (estimated from the per-draw values)."""
    torch.manual_seed(9)
    vae = VAE(LAYERS[1]).double()
    x = torch.bernoulli(torch.rand(4, 784, dtype=torch.float64))
    terms = program_elbo_terms(vae.model, vae.guide, (x,), num_samples=4000, seed=1)
    exact_kl = vae.kl_to_prior(x).mean().item()
    _, rate = trace_elbo_terms(*traces(vae.model, vae.guide, (x,), 4000), 4)
    standard_error = rate.mean(-1).std().item() / math.sqrt(4000)
    assert abs(terms.kl - exact_kl) < 5 * standard_error
    assert terms.negative_elbo == pytest.approx(terms.reconstruction + terms.kl)
