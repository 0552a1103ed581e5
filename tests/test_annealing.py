"""Annealed importance sampling and bidirectional Monte Carlo: one step is importance sampling from the
prior; on the linear-Gaussian model (closed-form log p(x)) and on a trained 2-D VAE (quadrature) AIS lies
within 5 of its standard errors of the truth and the BDMC bounds bracket it, tightening as T grows."""

from __future__ import annotations

import pytest
import torch
from conftest import trained_2d_vae
from test_log_likelihood import linear_problem

from pyro_vae.core import analytic, linear_gaussian
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import annealing, posterior
from pyro_vae.evaluation.annealing import Annealing


@pytest.fixture(scope="module")
def vae_2d():
    """A trained 2-D VAE, 6 test images and 6 images simulated from it (with their latents), and the log p(x)
    of each set by quadrature (a grid of spacing 0.05 over [-4.5, 4.5]^2, computed once for both)."""
    vae, x = trained_2d_vae(steps=300, images=6)
    simulated, z = annealing.simulate(vae, 6, seed=1)
    truth = posterior.grid_posterior(vae, torch.cat([x, simulated]), limit=4.5, points=181).log_marginal
    return vae, (x, truth[:6].mean().item()), (simulated, z, truth[6:].mean().item())


def simulated_linear(model, n: int, seed: int):
    """n images simulated from the linear-Gaussian model, the latents that made them, and the true log p(x)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.z_dim, generator=g, dtype=model.W.dtype)
    x = z @ model.W.T + model.b + model.sigma * torch.randn(n, model.W.shape[0], generator=g, dtype=model.W.dtype)
    return x, z, linear_gaussian.log_marginal(x.double(), model.W.double(), model.b.double(), model.sigma)


def test_the_schedule_runs_from_zero_to_one_and_rises():
    betas = annealing.sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and bool((betas.diff() > 0).all())
    torch.testing.assert_close(annealing.sigmoid_schedule(1), torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_one_step_is_importance_sampling_from_the_prior():
    """T = 1: no move, w_c = p(x | z_c) with z_c ~ p(z), so the estimate is log (1/C) sum_c p(x | z_c) for
    the seed's draws, to float precision."""
    model, x, _ = linear_problem("cpu", torch.float64)
    estimate = annealing.ais(model, x, Annealing(steps=1, chains=6, seed=4))
    z = torch.randn((6, x.shape[0], model.z_dim), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expected = analytic.log_mean_exp(model.log_likelihood(x, z))
    torch.testing.assert_close(estimate.per_image, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ais_finds_the_linear_gaussian_marginal(dtype):
    """T = 200 HMC-annealed chains from the prior: the mean log p(x) within 5 standard errors of the
    closed form, with an acceptance rate HMC can work with."""
    model, x, truth = linear_problem("cpu", dtype)
    estimate = annealing.ais(model, x, Annealing(steps=200, chains=16, leapfrog=5, seed=0))
    assert abs(estimate.value - truth.mean().item()) < 5 * estimate.standard_error
    assert 0.5 < estimate.acceptance < 1.0


def test_bdmc_brackets_the_linear_gaussian_marginal_and_tightens():
    """On simulated data, forward AIS lies below log p(x) and reverse AIS above; with more steps the
    lower bound rises, the upper falls, and the truth stays between them within their standard errors."""
    model, _, _ = linear_problem("cpu", torch.float64)
    x, z, truth = simulated_linear(model, 20, seed=5)
    short = annealing.bdmc(model, x, z, Annealing(steps=5, chains=16, leapfrog=5))
    long = annealing.bdmc(model, x, z, Annealing(steps=300, chains=16, leapfrog=5))
    t = truth.mean().item()
    assert short.lower.value < t < short.upper.value
    assert long.lower.value - 5 * long.lower.standard_error < t < long.upper.value + 5 * long.upper.standard_error
    assert long.lower.value > short.lower.value and long.upper.value < short.upper.value
    assert long.gap < short.gap / 10


def test_ais_matches_quadrature_on_a_trained_2d_vae(vae_2d):
    """On a trained VAE's non-Gaussian posterior, AIS on test images is within 5 standard errors of log p(x)
    by quadrature."""
    vae, (x, truth), _ = vae_2d
    estimate = annealing.ais(vae, x, Annealing(steps=100, chains=8, leapfrog=5, seed=0))
    assert abs(estimate.value - truth) < 5 * estimate.standard_error


def test_bdmc_brackets_quadrature_on_a_trained_2d_vae(vae_2d):
    """Images simulated from the trained 2-D VAE: the BDMC bounds bracket their log p(x) by quadrature, and
    are tighter at T = 60 than at T = 5."""
    vae, _, (x, z, truth) = vae_2d
    short = annealing.bdmc(vae, x, z, Annealing(steps=5, chains=8, leapfrog=5))
    long = annealing.bdmc(vae, x, z, Annealing(steps=60, chains=8, leapfrog=5))
    assert short.lower.value < truth < short.upper.value
    assert long.lower.value - 5 * long.lower.standard_error < truth < long.upper.value + 5 * long.upper.standard_error
    assert long.gap < short.gap


def test_simulation_is_reproducible_and_leaves_the_global_generator_alone(vae_2d):
    vae = vae_2d[0]
    before = torch.get_rng_state()
    first, second = annealing.simulate(vae, 4, seed=2), annealing.simulate(vae, 4, seed=2)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(torch.get_rng_state(), before)
    assert set(first[0].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "request_",
    [dict(steps=0), dict(chains=0), dict(leapfrog=True), dict(steps=2.5), dict(chains=annealing.MAX_CHAINS + 1)],
)
def test_requests_out_of_range_are_refused_in_one_line(request_):
    with pytest.raises(ConfigError, match="AIS"):
        Annealing(**request_)


def test_reverse_ais_needs_one_latent_per_image():
    model, x, _ = linear_problem("cpu", torch.float64)
    with pytest.raises(ConfigError, match="one z"):
        annealing.reverse_ais(model, x, torch.zeros(x.shape[0] + 1, model.z_dim, dtype=torch.float64))
