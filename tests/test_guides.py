"""The variational families: each trains under each estimator and likelihood; its own reparameterized
log-density equals the Pyro distribution's; the full-covariance KL is the closed form under
TraceMeanField_ELBO; the flow, without one, makes TraceMeanField_ELBO fall back to Monte Carlo; the
local guide's steps touch only the rows of their batch."""

from __future__ import annotations

import pyro
import pytest
import torch
from conftest import rtol_for
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import MultivariateNormal, kl_divergence

from pyro_vae.core import analytic
from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.guides import GUIDES
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import LIKELIHOODS, ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.epoch import fit_test_points
from pyro_vae.training.objective import make_objective
from pyro_vae.training.step import Batch, svi_step

ROWS = 10  # the local guide's data points in these tests: 6 training rows, then 4 test rows


def small_vae(guide: str, likelihood: str = "bernoulli", device="cpu", dtype=torch.float64) -> VAE:
    pyro.set_rng_seed(0)
    config = ModelConfig(
        x_dim=20, hidden=(16,), z_dim=3, likelihood=likelihood, guide=guide, local_points=6, local_test_points=ROWS - 6
    )
    vae = VAE(config).to(device=device, dtype=dtype)
    if guide == "local":  # away from the prior, where every row would look the same
        torch.nn.init.normal_(vae.q.table.weight, std=0.3)
    return vae


def rows_of(vae: VAE, x: torch.Tensor) -> torch.Tensor | None:
    """The local guide's rows for a batch (its first rows); None for the amortized guides."""
    return torch.arange(x.shape[0], device=x.device) if vae.is_local else None


def q_input(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """What vae.q reads: the images, or the local guide's rows."""
    return rows_of(vae, x) if vae.is_local else x


def dense(grad: torch.Tensor) -> torch.Tensor:
    return grad.to_dense() if grad.is_sparse else grad


def batch(likelihood: str = "bernoulli", device="cpu", dtype=torch.float64, n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 20, generator=g, dtype=torch.float64)
    return (torch.bernoulli(x, generator=g) if likelihood == "bernoulli" else x).to(device, dtype)


@pytest.mark.parametrize("guide", GUIDES)
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("estimator,particles", [("trace", 1), ("meanfield", 1), ("trace", 3), ("iwae", 3)])
def test_every_guide_steps_under_every_estimator_and_likelihood(device, guide, likelihood, estimator, particles):
    vae = small_vae(guide, likelihood, device, torch.float32)
    loss = ELBOLoss(vae, build_elbo(estimator, particles))
    x = batch(likelihood, device, torch.float32)
    value = loss(x, 1.0, rows_of(vae, x))
    value.backward()
    assert torch.isfinite(value)
    grads = [dense(p.grad) for p in vae.q.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("guide", GUIDES)
def test_own_log_density_equals_the_pyro_distribution(device, dtype, guide):
    """sample(x, eps) gives z and log q(z|x); Pyro's distribution scores the same z the same way (for
    the flow, by inverting the autoregressive layers)."""
    vae, x = small_vae(guide, device=device, dtype=dtype), batch(device=device, dtype=dtype)
    eps = torch.randn(2, x.shape[0], 3, dtype=dtype, device=device)
    z, log_q = vae.sample_q(x, eps, rows_of(vae, x))
    q = vae.q(q_input(vae, x))
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
    torch.testing.assert_close(
        kl_divergence(
            MultivariateNormal(q.loc, scale_tril=q.scale_tril),
            MultivariateNormal(torch.zeros_like(q.loc), scale_tril=eye),
        ),
        closed,
        rtol=rtol_for(dtype),
        atol=0,
    )
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
        Trace_ELBO().loss(vae.model, replayed, x), rel=1e-12
    )


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


def test_local_guide_under_meanfield_is_the_closed_form_kl():
    """For the local guide's q_i, TraceMeanField_ELBO's loss is -(log p(x|z) - KL(q_i || N(0, I))) with the
    hand-derived KL, for the guide's z; Trace_ELBO's differs from it (its KL is sampled)."""
    vae, x = small_vae("local"), batch()
    rows = rows_of(vae, x)
    trace = poutine.trace(vae.guide).get_trace(x, 1.0, rows)
    replayed = poutine.replay(vae.guide, trace=trace)
    with torch.no_grad():
        loc, scale = vae.q.table.weight[:6, :3], vae.q.table.weight[:6, 3:].exp()
        closed = analytic.kl_diagonal_normal_standard_normal(loc, scale)
        expected = -(vae.log_likelihood(x, trace.nodes["z"]["value"]) - closed).mean()
    torch.testing.assert_close(vae.kl_to_prior(x, rows), closed, rtol=1e-12, atol=0)
    assert TraceMeanField_ELBO().loss(vae.model, replayed, x, 1.0, rows) == pytest.approx(expected.item(), rel=1e-10)
    assert Trace_ELBO().loss(vae.model, replayed, x, 1.0, rows) != pytest.approx(expected.item(), rel=1e-6)


def test_local_guide_without_rows_is_a_clear_error():
    vae, x = small_vae("local"), batch()
    with pytest.raises(ConfigError, match="row numbers"):
        vae.kl_to_prior(x)
    with pytest.raises(ConfigError, match="row numbers"):
        ELBOLoss(vae, build_elbo("trace"))(x, 1.0)


@pytest.mark.parametrize("estimator", ["trace", "jit-trace"])
def test_a_local_step_moves_only_the_rows_of_its_batch(estimator):
    """SparseAdam moves the batch's rows and leaves every other row where it was, after many steps; a
    dense Adam would go on moving the rows of earlier batches by their stale momentum."""
    vae, x = small_vae("local", dtype=torch.float32), batch(dtype=torch.float32)
    loss, optimizer = make_objective(TrainConfig(model=vae.config, estimator=estimator), vae)
    table = vae.q.table.weight
    before = table.detach().clone()
    for rows in [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])] * 3:
        svi_step(loss, optimizer, Batch(x[rows], rows))
    moved = (table.detach() != before).any(1)
    assert moved[:6].all() and not moved[6:].any()
    # the contrast: a dense Adam over the same table moves rows absent from the last batches
    table.grad = None
    dense_adam = torch.optim.Adam([table], lr=0.05)
    loss(x[:3], 1.0, torch.arange(3)).backward()
    table.grad = table.grad.to_dense()
    dense_adam.step()
    frozen = table.detach().clone()
    table.grad = torch.zeros_like(table)  # rows 0-2 are not in this "batch"
    dense_adam.step()
    assert (table.detach()[:3] != frozen[:3]).all()


def test_test_points_pass_fits_only_the_test_rows():
    """fit_test_points steps the test rows' q and nothing else: the decoder and the training rows stay."""
    vae = small_vae("local", dtype=torch.float32)
    x = batch(dtype=torch.float32, n=4)
    loss, optimizer = make_objective(TrainConfig(model=vae.config, estimator="meanfield"), vae)
    decoder = [p.detach().clone() for p in vae.decoder.parameters()]
    before = vae.q.table.weight.detach().clone()
    assert fit_test_points(loss, optimizer.sparse, x, torch.arange(6, 10), 3, 1.0) == 0
    after = vae.q.table.weight.detach()
    assert (after[6:] != before[6:]).any(1).all() and torch.equal(after[:6], before[:6])
    assert all(torch.equal(p, q) for p, q in zip(vae.decoder.parameters(), decoder))
    assert all(p.grad is None for p in vae.decoder.parameters())
