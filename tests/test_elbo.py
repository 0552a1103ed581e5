"""The hand-derived ELBO forms against Pyro's own estimators on the project's model and guide."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import rtol_for
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.core import analytic
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import LIKELIHOODS, ModelConfig


def small_vae(likelihood: str, device, dtype, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    config = ModelConfig(x_dim=20, hidden=(16,), z_dim=3, likelihood=likelihood, sigma=0.3)
    return VAE(config).to(device=device, dtype=dtype)


def batch(likelihood: str, device, dtype, n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 20, generator=g, dtype=torch.float64)
    return (torch.bernoulli(x, generator=g) if likelihood == "bernoulli" else x).to(device, dtype)


def guide_noise(vae: VAE, x: torch.Tensor, kl_weight: float = 1.0):
    """One run of the guide: its trace, and the noise eps = (z - mu) / sigma that produced z."""
    trace = poutine.trace(vae.guide).get_trace(x, kl_weight)
    loc, scale = vae.q.encoder(x)
    return trace, ((trace.nodes["z"]["value"] - loc) / scale).detach()


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_pyro_losses_equal_hand_derived_forms_for_the_same_z(device, dtype, likelihood):
    """TraceMeanField_ELBO = analytic-KL form and Trace_ELBO = Monte Carlo form, same z, per image."""
    vae, x = small_vae(likelihood, device, dtype), batch(likelihood, device, dtype)
    trace, eps = guide_noise(vae, x)
    replayed = poutine.replay(vae.guide, trace=trace)
    meanfield = TraceMeanField_ELBO().loss(vae.model, replayed, x)
    monte_carlo = Trace_ELBO().loss(vae.model, replayed, x)
    with torch.no_grad():
        analytic_kl = -analytic.elbo_analytic_kl(vae, x, eps.unsqueeze(0)).mean().item()
        mc = -analytic.elbo_monte_carlo(vae, x, eps.unsqueeze(0)).mean().item()
    assert meanfield == pytest.approx(analytic_kl, rel=rtol_for(dtype))
    assert monte_carlo == pytest.approx(mc, rel=rtol_for(dtype))


def test_kl_weight_scales_only_the_kl_term(device, dtype):
    """With beta on the z site, TraceMeanField's loss is -(E log p(x|z) - beta KL)."""
    vae, x = small_vae("bernoulli", device, dtype), batch("bernoulli", device, dtype)
    beta = 0.25
    trace, eps = guide_noise(vae, x, beta)
    loss = TraceMeanField_ELBO().loss(vae.model, poutine.replay(vae.guide, trace=trace), x, beta)
    with torch.no_grad():
        loc, scale = vae.q.encoder(x)
        z = analytic.reparameterize(loc, scale, eps)
        expected = -(vae.log_likelihood(x, z) - beta * analytic.kl_diagonal_normal_standard_normal(loc, scale)).mean()
    assert loss == pytest.approx(expected.item(), rel=rtol_for(dtype))


def reference_draws(vae, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-ELBO (analytic KL) averaged over the images, one value per draw of eps (draws, images, z): the draws
    stacked as a batch of copies of x, each image with its own noise."""
    draws, images, z_dim = eps.shape
    elbo = analytic.elbo_analytic_kl(vae, x.repeat(draws, 1), eps.reshape(1, draws * images, z_dim))
    return -elbo.reshape(draws, images).mean(1)


def test_estimators_share_their_expectation():
    """Over many independent draws, the means of Trace_ELBO and TraceMeanField_ELBO estimates agree
    with the analytic-KL ELBO within 5 standard errors of the difference."""
    torch.manual_seed(6)
    vae, x = small_vae("bernoulli", "cpu", torch.float64), batch("bernoulli", "cpu", torch.float64, n=4)
    draws = 2000
    with torch.no_grad():
        trace = torch.tensor([Trace_ELBO().loss(vae.model, vae.guide, x) for _ in range(draws)])
        meanfield = torch.tensor([TraceMeanField_ELBO().loss(vae.model, vae.guide, x) for _ in range(draws)])
        # the reference: the analytic-KL form averaged over many more noise draws, one per image each
        eps = torch.randn(50_000, x.shape[0], vae.config.z_dim, dtype=torch.float64)
        per_draw = torch.cat([reference_draws(vae, x, chunk) for chunk in eps.split(5_000)])
    reference, reference_se = per_draw.mean(), per_draw.std() / math.sqrt(len(per_draw))
    for estimates in (trace, meanfield):
        se = math.sqrt(estimates.var().item() / draws + reference_se.item() ** 2)
        assert abs(estimates.mean().item() - reference.item()) < 5 * se
    se = math.sqrt(trace.var().item() / draws + meanfield.var().item() / draws)
    assert abs(trace.mean().item() - meanfield.mean().item()) < 5 * se
    # the analytic KL removes the KL term's noise, so its loss estimate is no noisier here
    assert meanfield.var() < trace.var()


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_gradients_equal_pyro_differentiable_loss(device, dtype, likelihood):
    """d(-ELBO)/d(theta, phi) by hand equals Trace_ELBO.differentiable_loss's, same noise, every parameter."""
    vae, x = small_vae(likelihood, device, dtype), batch(likelihood, device, dtype)
    trace, eps = guide_noise(vae, x)
    params = [p for p in vae.parameters() if p.requires_grad]
    pyro_loss = Trace_ELBO().differentiable_loss(vae.model, poutine.replay(vae.guide, trace=trace), x)
    pyro_grads = torch.autograd.grad(pyro_loss, params)
    hand_loss = -analytic.elbo_monte_carlo(vae, x, eps.unsqueeze(0)).mean()
    hand_grads = torch.autograd.grad(hand_loss, params)
    names = [n for n, p in vae.named_parameters() if p.requires_grad]
    assert any(n.startswith("q.encoder") for n in names) and any(n.startswith("decoder") for n in names)
    for name, g_pyro, g_hand in zip(names, pyro_grads, hand_grads):
        torch.testing.assert_close(
            g_pyro, g_hand, rtol=rtol_for(dtype), atol=rtol_for(dtype) * g_hand.abs().max().item(), msg=name
        )


def test_reparameterized_sample_gradient(device, dtype):
    """dz/dphi = dmu/dphi + eps * dsigma/dphi for the z that Pyro's guide samples."""
    vae, x = small_vae("bernoulli", device, dtype), batch("bernoulli", device, dtype)
    trace, eps = guide_noise(vae, x)
    z = trace.nodes["z"]["value"]
    encoder = list(vae.q.encoder.parameters())
    v = torch.randn(z.shape, dtype=dtype, device=device)  # a random direction: compare v^T dz/dphi
    dz = torch.autograd.grad((v * z).sum(), encoder)
    loc, scale = vae.q.encoder(x)
    dloc = torch.autograd.grad((v * loc).sum(), encoder, retain_graph=True)
    dscale = torch.autograd.grad((v * eps * scale).sum(), encoder)
    for a, b, c in zip(dz, dloc, dscale):
        torch.testing.assert_close(a, b + c, rtol=rtol_for(dtype), atol=rtol_for(dtype) * a.abs().max().item())
