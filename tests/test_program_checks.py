"""A user's Pyro program checked on one batch before it trains (`core.program_checks`): each problem refused
in one line naming the site, and a program without any passes."""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.program_checks import check_program
from pyro_vae.errors import ConfigError

X = torch.randn(4, 3)


def model(x, plate=True, obs_shape=None, scale=1.0):
    with pyro.plate("images", x.shape[0], dim=-1) if plate else contextlib.nullcontext():
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        loc = torch.cat([z, z[..., :1]], -1)
        observed = x if obs_shape is None else x[:, :obs_shape]
        pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=observed)


def guide(x, sites=("z",), enumerate_y=False):
    with pyro.plate("images", x.shape[0], dim=-1):
        for name in sites:
            pyro.sample(name, dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
        if enumerate_y:
            pyro.sample("y", dist.Poisson(torch.ones(x.shape[0])), infer={"enumerate": "parallel"})


@pytest.mark.parametrize(
    "program, message",
    [
        ((lambda x: model(x, plate=False), guide), "the model's site 'z' lies outside a plate over the 4 images"),
        ((model, lambda x: guide(x, sites=())), "the guide does not sample the model's latent site(s) 'z'"),
        ((model, lambda x: guide(x, sites=("z", "w"))), "the guide samples site(s) 'w' that the model does not have"),
        ((lambda x: model(x, obs_shape=2), guide), "the model's observed site 'x' has a value of shape (4, 2)"),
        (
            (lambda x: model(x, scale=torch.tensor(float("nan"))), guide),
            "the model failed on the first batch: ValueError: Expected parameter scale",
        ),
    ],
)
def test_each_problem_of_a_program_is_one_line_naming_the_site(program, message):
    with pytest.raises(ConfigError) as refused:
        check_program(*program, (X,))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_enumerated_site_with_unbounded_support_is_refused_naming_it():
    def with_y(x):
        with pyro.plate("images", x.shape[0], dim=-1):
            pyro.sample("y", dist.Poisson(torch.ones(x.shape[0])))
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.cat([z, z[..., :1]], -1), 1.0).to_event(1), obs=x)

    with pytest.raises(ConfigError, match="the guide's site 'y' is marked for enumeration, but its distribution"):
        check_program(with_y, lambda x: guide(x, enumerate_y=True), (X,))


def test_a_log_density_that_is_not_finite_is_refused():
    def infinite(x):
        model(x, scale=1e-30)  # a valid scale, whose squared inverse overflows float32: log p(x|z) = -inf

    with pytest.raises(ConfigError, match="the model's site 'x' has a log-density that is not finite on the first"):
        check_program(infinite, guide, (X,))


def test_the_built_in_vae_and_a_correct_program_pass():
    check_program(model, guide, (X,))
    vae = VAE(ModelConfig(hidden=(8,), z_dim=2, stochastic_layers=2, z2_dim=2))
    check_program(vae.model, vae.guide, (torch.bernoulli(torch.rand(3, 784)),))
