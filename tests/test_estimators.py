"""The estimator factory: every name builds and steps, the JIT mean-field estimator compiles once, and the
IWAE estimator is Pyro's RenyiELBO(alpha=0), per image and differentiable."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae.core.estimators import ESTIMATORS, IMPORTANCE_WEIGHTED, ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.training.loop import TrainConfig


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("num_particles", [1, 3])
def test_each_estimator_builds_and_steps(name, num_particles):
    torch.manual_seed(0)
    vae = VAE(ModelConfig(hidden=(16,), z_dim=3))
    loss = ELBOLoss(vae, build_elbo(name, num_particles))
    value = loss(torch.bernoulli(torch.rand(10, 784)), 1.0 if name in IMPORTANCE_WEIGHTED else 0.5)
    value.backward()
    assert value.shape == () and torch.isfinite(value)
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters())


def test_bad_names_and_particle_counts_are_refused():
    with pytest.raises(ConfigError, match="unknown estimator"):
        build_elbo("trace-elbo")
    with pytest.raises(ConfigError, match="at least 1"):
        build_elbo("trace", 0)


@pytest.mark.parametrize("name", ["jit-trace", "jit-meanfield"])
def test_jit_estimators_trace_the_model_once(name):
    """The model's Python body runs only while compiling: twice (parameter capture, then the trace)
    on the first step and never after, also when the KL weight changes. Pyro 1.9's own
    JitTraceMeanField_ELBO retraces on every step."""
    torch.manual_seed(0)
    vae = VAE(ModelConfig(hidden=(16,), z_dim=3))
    calls = 0
    original = vae.model

    def counting_model(*args):
        nonlocal calls
        calls += 1
        return original(*args)

    vae.model = counting_model
    loss = ELBOLoss(vae, build_elbo(name))
    x = torch.bernoulli(torch.rand(10, 784))
    for step in range(25):
        loss(x, min(1.0, (step + 1) / 10)).backward()
    assert calls == 2


def _small_vae_and_batch():
    torch.manual_seed(0)
    vae = VAE(ModelConfig(hidden=(16,), z_dim=3)).double()
    return vae, torch.bernoulli(torch.rand(10, 784, dtype=torch.float64))


@pytest.mark.parametrize("num_particles", [1, 5])
def test_iwae_loss_and_gradient_equal_pyro_renyi_elbo(num_particles):
    """Same seed, same draws: the per-image IWAE loss is Pyro's RenyiELBO(alpha=0) loss on the unscaled
    model (the 1/batch scale undone) divided by the batch size, and its gradient is the one Pyro's
    surrogate loss gives to parameters in the param store."""
    vae, x = _small_vae_and_batch()
    batch = x.shape[0]
    pyro.set_rng_seed(1)
    ours = ELBOLoss(vae, build_elbo("iwae", num_particles))(x, 1.0)
    ours_grads = torch.autograd.grad(ours, list(vae.parameters()))

    def unscaled(fn):
        def run(x):
            pyro.module("vae", vae)
            with poutine.scale(scale=float(batch)):
                fn(x)

        return run

    pyro.clear_param_store()
    renyi = pyro.infer.RenyiELBO(
        alpha=0, num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )
    pyro.set_rng_seed(1)
    vae.zero_grad()
    theirs = renyi.loss_and_grads(unscaled(vae.model), unscaled(vae.guide), x) / batch
    assert ours.item() == pytest.approx(theirs, rel=1e-12)
    for (name, p), g in zip(vae.named_parameters(), ours_grads):
        torch.testing.assert_close(p.grad / batch, g, rtol=1e-10, atol=1e-12, msg=name)


def test_iwae_with_one_particle_is_trace_elbo():
    vae, x = _small_vae_and_batch()
    pyro.set_rng_seed(2)
    iwae = ELBOLoss(vae, build_elbo("iwae", 1))(x, 1.0)
    pyro.set_rng_seed(2)
    trace = ELBOLoss(vae, build_elbo("trace", 1))(x, 1.0)
    assert iwae.item() == pytest.approx(trace.item(), rel=1e-12)


def test_iwae_bound_tightens_with_particles():
    """L_1 <= L_5 <= L_50 in expectation (Burda et al., Theorem 1): the mean losses over 200 draws
    fall with K, each step by more than 5 standard errors of the difference."""
    vae, x = _small_vae_and_batch()
    means, variances = [], []
    with torch.no_grad():
        for k in (1, 5, 50):
            loss = ELBOLoss(vae, build_elbo("iwae", k))
            pyro.set_rng_seed(3)
            draws = torch.stack([loss(x, 1.0) for _ in range(200)])
            means.append(draws.mean().item())
            variances.append(draws.var().item() / 200)
    for i in range(2):
        assert means[i] - means[i + 1] > 5 * (variances[i] + variances[i + 1]) ** 0.5


def test_iwae_refuses_a_kl_weight():
    with pytest.raises(ConfigError, match="iwae"):
        TrainConfig(estimator="iwae", num_particles=5, beta=0.5)
    with pytest.raises(ConfigError, match="iwae"):
        TrainConfig(estimator="iwae", kl_warmup=2)


@pytest.mark.parametrize("name", IMPORTANCE_WEIGHTED)
@pytest.mark.parametrize("kl_weight", [0.5, 0.0, 2.0, torch.tensor(0.5)], ids=["half", "zero", "two", "tensor"])
def test_the_importance_weighted_losses_refuse_a_kl_weight_themselves(name, kl_weight):
    """Through the library's loss, not only the config: these bounds read unscaled log-densities, so a KL
    weight other than 1 would be silently ignored (the value would be the weight-1 value)."""
    loss = ELBOLoss(VAE(ModelConfig(hidden=(8,), z_dim=2)), build_elbo(name, 3))
    x = torch.bernoulli(torch.rand(4, 784))
    with pytest.raises(ConfigError, match=r"no separate KL term to weight; its KL weight must be 1, got"):
        loss(x, kl_weight)
    assert torch.isfinite(loss(x, 1.0)) and torch.isfinite(loss(x, torch.tensor(1.0)))


@pytest.mark.parametrize("name", ["trace", "meanfield", "iwae"])
def test_pyro_validation_runs_on_the_first_step_only_unless_asked(name):
    """A value outside the Bernoulli's support stops the first step; later steps skip Pyro's checks
    (the speed they cost), unless validate_every_step keeps them."""
    vae, x = _small_vae_and_batch()
    grey = x.clone()
    grey[0, 0] = 0.5
    with pytest.raises(ValueError, match="support"):
        ELBOLoss(vae, build_elbo(name))(grey, 1.0)
    fast = ELBOLoss(vae, build_elbo(name))
    fast(x, 1.0)
    assert torch.isfinite(fast(grey, 1.0))
    checked = ELBOLoss(vae, build_elbo(name), validate_every_step=True)
    checked(x, 1.0)
    with pytest.raises(ValueError, match="support"):
        checked(grey, 1.0)
