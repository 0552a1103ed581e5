"""The model and guide: site names and shapes, training that learns, and no shared state."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from pyro.poutine.util import site_is_subsample

from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import LIKELIHOODS, ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.training.step import Batch, svi_step


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_sites_and_shapes(device, likelihood):
    vae = VAE(ModelConfig(likelihood=likelihood, hidden=(32, 16), z_dim=5)).to(device)
    x = torch.rand(7, 784, device=device).round()
    model = poutine.trace(vae.model).get_trace(x)
    guide = poutine.trace(vae.guide).get_trace(x)
    model_sites = [n for n, s in model.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    guide_sites = [n for n, s in guide.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    assert model_sites == ["z", "x"] and guide_sites == ["z"]
    assert model.nodes["x"]["is_observed"] and not model.nodes["z"]["is_observed"]
    assert guide.nodes["z"]["value"].shape == (7, 5)
    assert model.nodes["z"]["fn"].event_shape == (5,) and model.nodes["x"]["fn"].event_shape == (784,)
    assert [f.name for f in model.nodes["x"]["cond_indep_stack"]] == ["data"]
    assert model.nodes["x"]["scale"] == pytest.approx(1 / 7)  # per-image losses


def test_decoder_mirrors_encoder():
    vae = VAE(ModelConfig(hidden=(200, 100), z_dim=4))
    enc = [m.out_features for m in vae.q.encoder.modules() if isinstance(m, torch.nn.Linear)]
    dec = [m.out_features for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert enc == [200, 100, 8] and dec == [100, 200, 784]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(likelihood="poisson"),
        dict(activation="sine"),
        dict(z_dim=0),
        dict(sigma=-1.0),
        dict(learn_sigma=True),
        dict(guide="flowers"),
    ],
)
def test_bad_model_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        ModelConfig(**kwargs)


def test_learned_sigma_is_a_parameter():
    vae = VAE(ModelConfig(likelihood="gaussian", sigma=0.2, learn_sigma=True))
    assert "log_sigma" in dict(vae.named_parameters())
    assert vae.sigma.item() == pytest.approx(0.2)
    assert "log_sigma" not in dict(VAE(ModelConfig(likelihood="gaussian")).named_parameters())


@pytest.mark.parametrize("estimator", ["trace", "meanfield", "jit-trace", "jit-meanfield"])
def test_svi_reduces_the_loss(estimator):
    """300 steps on a fixed batch of binary images bring the negative ELBO down clearly."""
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(64, 784) * 0.3)
    vae = VAE(ModelConfig(hidden=(64,), z_dim=8))
    loss = ELBOLoss(vae, build_elbo(estimator))
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        optimizer.zero_grad()
        value = loss(x, 1.0)
        value.backward()
        optimizer.step()
        losses.append(value.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 150, (first, last)  # 543 -> about 360 nats at this size


def test_step_equals_pyro_svi_step():
    """The training step (estimator loss, backward, torch Adam on the module) is Pyro's SVI.step."""
    torch.manual_seed(1)
    x = torch.bernoulli(torch.rand(16, 784))
    ours, theirs = VAE(ModelConfig(hidden=(32,), z_dim=4)), VAE(ModelConfig(hidden=(32,), z_dim=4))
    theirs.load_state_dict(ours.state_dict())

    loss = ELBOLoss(ours, build_elbo("trace"))
    optimizer = torch.optim.Adam(ours.parameters(), lr=1e-2)

    pyro.clear_param_store()

    def model(x):
        pyro.module("vae", theirs)
        theirs.model(x)

    def guide(x):
        pyro.module("vae", theirs)
        theirs.guide(x)

    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for step in range(3):
        pyro.set_rng_seed(step)
        ours_loss, finite = svi_step(loss, optimizer, Batch(x))
        assert finite
        pyro.set_rng_seed(step)
        assert svi.step(x) == pytest.approx(ours_loss.item(), rel=1e-5)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    pyro.clear_param_store()


@pytest.mark.parametrize("estimator", ["trace", "jit-trace"])
def test_a_new_model_never_picks_up_an_earlier_ones_parameters(estimator):
    """Two models built one after the other train their own parameters, whatever the estimator."""
    x = torch.bernoulli(torch.rand(8, 784))
    for seed in (0, 1):
        torch.manual_seed(seed)
        vae = VAE(ModelConfig(hidden=(16,), z_dim=2))
        before = [p.detach().clone() for p in vae.parameters()]
        loss = ELBOLoss(vae, build_elbo(estimator))
        loss(x, 1.0).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.parameters())
        torch.testing.assert_close([p.detach() for p in vae.parameters()], before)


@pytest.mark.parametrize("estimator", ["jit-trace", "jit-meanfield"])
def test_two_compiled_losses_used_in_turn_read_their_own_modules(estimator):
    """Compiled losses look parameters up in Pyro's param store by name: building a second one must not
    redirect the first to the second model's parameters."""
    x = torch.bernoulli(torch.rand(8, 784))
    vaes = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        vaes.append(VAE(ModelConfig(hidden=(16,), z_dim=2)))
    first = ELBOLoss(vaes[0], build_elbo(estimator))
    first(x, 1.0)  # compiles; tracing draws random numbers of its own
    pyro.set_rng_seed(5)
    before = first(x, 1.0).item()
    second = ELBOLoss(vaes[1], build_elbo(estimator))
    second(x, 1.0).backward()
    pyro.set_rng_seed(5)
    again = first(x, 1.0)
    again.backward()
    assert again.item() == pytest.approx(before, rel=1e-6)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vaes[0].parameters())
