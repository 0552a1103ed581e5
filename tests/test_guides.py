"""The variational families: each trains under each estimator and likelihood; its own reparameterized
log-density equals the Pyro distribution's; the full-covariance KL is the closed form under
TraceMeanField_ELBO; the flow, without one, makes TraceMeanField_ELBO fall back to Monte Carlo."""

from __future__ import annotations

import pyro
import pytest
import torch
from conftest import rtol_for
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import MultivariateNormal, kl_divergence

from pyro_vae import analytic
from pyro_vae.estimators import build_elbo, loss_function
from pyro_vae.guides import GUIDES
from pyro_vae.model import LIKELIHOODS, VAE, ModelConfig


def small_vae(guide: str, likelihood: str = "bernoulli", device="cpu", dtype=torch.float64) -> VAE:
    pyro.set_rng_seed(0)
    config = ModelConfig(x_dim=20, hidden=(16,), z_dim=3, likelihood=likelihood, guide=guide)
    return VAE(config).to(device=device, dtype=dtype)


def batch(likelihood: str = "bernoulli", device="cpu", dtype=torch.float64, n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 20, generator=g, dtype=torch.float64)
    return (torch.bernoulli(x, generator=g) if likelihood == "bernoulli" else x).to(device, dtype)


@pytest.mark.parametrize("guide", GUIDES)
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("estimator,particles", [("trace", 1), ("meanfield", 1), ("trace", 3), ("iwae", 3)])
def test_every_guide_steps_under_every_estimator_and_likelihood(device, guide, likelihood, estimator, particles):
    vae = small_vae(guide, likelihood, device, torch.float32)
    loss = loss_function(vae, build_elbo(estimator, particles))
    value = loss(batch(likelihood, device, torch.float32), 1.0)
    value.backward()
    assert torch.isfinite(value)
    grads = [p.grad for p in vae.q.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("guide", GUIDES)
def test_own_log_density_equals_the_pyro_distribution(device, dtype, guide):
    """sample(x, eps) gives z and log q(z|x); Pyro's distribution scores the same z the same way (for
    the flow, by inverting the autoregressive layers)."""
    vae, x = small_vae(guide, device=device, dtype=dtype), batch(device=device, dtype=dtype)
    eps = torch.randn(2, x.shape[0], 3, dtype=dtype, device=device)
    z, log_q = vae.sample_q(x, eps)
    q = vae.q(x)
    fresh = z.detach().clone()  # not the cached sample: the flow has to invert
    torch.testing.assert_close(q.log_prob(fresh), log_q, rtol=rtol_for(dtype) * 100, atol=rtol_for(dtype) * 100)


def test_full_covariance_kl_is_the_closed_form_under_meanfield(device, dtype):
    """The registered KL(MultivariateNormal || diagonal Normal) equals the hand-derived one and torch's
    MVN-MVN KL, and TraceMeanField_ELBO's loss uses it: -(log p(x|z) - KL) for the guide's z."""
    vae, x = small_vae("full-covariance", device=device, dtype=dtype), batch(device=device, dtype=dtype)
    q = vae.q(x)
    prior = pyro.distributions.Normal(torch.zeros_like(q.loc), 1.0).to_event(1)
    closed = vae.kl_to_prior(x)
    torch.testing.assert_close(kl_divergence(q, prior), closed, rtol=rtol_for(dtype), atol=0)
    eye = torch.eye(3, dtype=dtype, device=device)
    torch.testing.assert_close(kl_divergence(MultivariateNormal(q.loc, scale_tril=q.scale_tril),
                                             MultivariateNormal(torch.zeros_like(q.loc), scale_tril=eye)),
                               closed, rtol=rtol_for(dtype), atol=0)
    trace = poutine.trace(vae.guide).get_trace(x)
    loss = TraceMeanField_ELBO().loss(vae.model, poutine.replay(vae.guide, trace=trace), x)
    with torch.no_grad():
        expected = -(vae.log_likelihood(x, trace.nodes["z"]["value"]) - closed).mean()
    assert loss == pytest.approx(expected.item(), rel=rtol_for(dtype))


def test_flow_makes_meanfield_fall_back_to_monte_carlo():
    """No closed-form KL for the flow: TraceMeanField_ELBO's loss equals Trace_ELBO's for the same z."""
    vae, x = small_vae("flow"), batch()
    assert vae.kl_to_prior(x) is None
    trace = poutine.trace(vae.guide).get_trace(x)
    replayed = poutine.replay(vae.guide, trace=trace)
    assert TraceMeanField_ELBO().loss(vae.model, replayed, x) == pytest.approx(
        Trace_ELBO().loss(vae.model, replayed, x), rel=1e-12)


@pytest.mark.parametrize("guide", ["full-covariance", "flow"])
def test_hand_derived_monte_carlo_elbo_equals_trace_elbo(guide):
    """elbo_monte_carlo with the guide's own sample equals Trace_ELBO for the z Pyro's guide drew."""
    vae, x = small_vae(guide), batch()
    eps = torch.randn(1, x.shape[0], 3, dtype=torch.float64)
    z, _ = vae.sample_q(x, eps)
    trace = poutine.trace(vae.guide).get_trace(x)
    trace.nodes["z"]["value"] = z[0].detach()
    pyro_loss = Trace_ELBO().loss(vae.model, poutine.replay(vae.guide, trace=trace), x)
    with torch.no_grad():
        hand = -analytic.elbo_monte_carlo(vae, x, eps).mean().item()
    assert pyro_loss == pytest.approx(hand, rel=1e-9)
