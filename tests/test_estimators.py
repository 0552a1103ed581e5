"""The estimator factory: every name builds and steps, and the JIT mean-field estimator compiles once."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.estimators import ESTIMATORS, build_elbo, loss_function
from pyro_vae.model import VAE, ModelConfig


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("num_particles", [1, 3])
def test_each_estimator_builds_and_steps(name, num_particles):
    torch.manual_seed(0)
    vae = VAE(ModelConfig(hidden=(16,), z_dim=3))
    loss = loss_function(vae, build_elbo(name, num_particles))
    value = loss(torch.bernoulli(torch.rand(10, 784)), 0.5)
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
    loss = loss_function(vae, build_elbo(name))
    x = torch.bernoulli(torch.rand(10, 784))
    for step in range(25):
        loss(x, min(1.0, (step + 1) / 10)).backward()
    assert calls == 2
