"""A training step never reads a value back to the host (on a GPU, each read is a synchronization that
stalls the step and rules out CUDA graphs), and the device-side ELBOs that make it so are Pyro's own."""

from __future__ import annotations

import contextlib
import traceback
from collections import Counter

import pyro
import pyro.infer
import pytest
import torch

from pyro_vae.core import device_elbo
from pyro_vae.core.compiled import NOT_TRACEABLE, CompiledLoss
from pyro_vae.core.estimators import ESTIMATORS, ELBOLoss, NonReparameterized, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.training.optimizer import SVIOptimizer
from pyro_vae.training.step import Batch, svi_step

READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")  # host reads
MULTI_SAMPLE = {"iwae": 3, "dreg": 3, "miwae": 3, "piwae": 3, "ciwae": 3}


@contextlib.contextmanager
def counted_host_reads():
    """Counts every call of a Tensor method that brings a value to the host, with where it came from."""
    calls: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name, original):
        def read(self, *args, **kwargs):
            caller = traceback.extract_stack(limit=3)[0]
            calls[f"{name} at {caller.filename}:{caller.lineno}"] += 1
            return original(self, *args, **kwargs)

        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def model_and_step(estimator: str, backend: str | None, **model) -> tuple[ELBOLoss, SVIOptimizer]:
    vae = VAE(ModelConfig(hidden=(16,), z_dim=3, image_shape=(28, 28), **model))
    loss = ELBOLoss(vae, build_elbo(estimator, num_particles=MULTI_SAMPLE.get(estimator, 1), copies=2))
    loss = loss if backend is None else CompiledLoss(loss, backend=backend)
    return loss, SVIOptimizer(list(vae.parameters()), lr=1e-3)


def reads_in_a_step(estimator: str, kl_weight=1.0, backend: str | None = None, **model) -> Counter:
    """Host reads during the second step (the first runs Pyro's validation, which reads values, and with a
    compile `backend` traces and compiles the graph)."""
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(8, 784))
    loss, optimizer = model_and_step(estimator, backend, **model)
    svi_step(loss, optimizer, Batch(x), kl_weight)
    with counted_host_reads() as calls:
        svi_step(loss, optimizer, Batch(x), kl_weight)
    return calls


def test_the_counter_sees_a_host_read():
    with counted_host_reads() as calls:
        bool(torch.ones(()) > 0)
        torch.ones(2).tolist()
    assert sum(calls.values()) == 2


@pytest.mark.parametrize("estimator", [name for name in ESTIMATORS if name != "enum"])
def test_a_step_of_every_estimator_reads_nothing_back_to_the_host(estimator):
    calls = reads_in_a_step(estimator)
    assert not calls, f"{estimator}: {dict(calls)}"


def test_enum_reads_only_what_pyros_dice_reads():
    """TraceEnum_ELBO's expectation (Pyro's `Dice.compute_expectation`) tests `(prob > 0).all()` in Python once
    per cost term: the one host read left in an enum step (docs/own-program.md), and no other."""
    calls = reads_in_a_step("enum")
    assert calls and all("traceenum_elbo.py" in where for where in calls), dict(calls)


@pytest.mark.parametrize(
    "estimator, backend",
    [(name, "graph") for name in ESTIMATORS if name not in NOT_TRACEABLE]
    + [(name, "inductor") for name in ("trace", "meanfield", "iwae", "dreg")],  # seconds of compiling each
)
def test_a_compiled_step_reads_nothing_back_to_the_host(estimator, backend):
    calls = reads_in_a_step(estimator, backend=backend)
    assert not calls, f"{estimator}, compiled by {backend}: {dict(calls)}"


@pytest.mark.parametrize("estimator", ["trace", "meanfield"])
@pytest.mark.parametrize(
    "model",
    [dict(guide="full-covariance"), dict(guide="flow"), dict(guide="delta"),
     dict(likelihood="continuous-bernoulli"), dict(likelihood="gaussian", learn_sigma=True)],
)  # fmt: skip
def test_every_guide_and_likelihood_steps_without_host_reads(estimator, model):
    calls = reads_in_a_step(estimator, kl_weight=torch.tensor(0.5), **model)
    assert not calls, f"{estimator}, {model}: {dict(calls)}"


def loss_and_gradients(elbo: pyro.infer.ELBO, vae: VAE, x: torch.Tensor, non_reparameterized: bool = False):
    pyro.set_rng_seed(1)
    vae.zero_grad()
    with NonReparameterized() if non_reparameterized else contextlib.nullcontext():
        loss = elbo.differentiable_loss(vae.model, vae.guide, x, 1.0)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in vae.parameters() if p.grad is not None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "ours, pyros, guide, non_reparameterized",
    [
        (device_elbo.Trace_ELBO, pyro.infer.Trace_ELBO, "diagonal", False),
        (device_elbo.Trace_ELBO, pyro.infer.Trace_ELBO, "diagonal", True),  # the score function's term
        (device_elbo.Trace_ELBO, pyro.infer.Trace_ELBO, "flow", False),
        (device_elbo.TraceMeanField_ELBO, pyro.infer.TraceMeanField_ELBO, "diagonal", False),  # closed-form KL
        (device_elbo.TraceMeanField_ELBO, pyro.infer.TraceMeanField_ELBO, "full-covariance", False),
        (device_elbo.TraceMeanField_ELBO, pyro.infer.TraceMeanField_ELBO, "flow", False),  # no KL: sampled
    ],
)
def test_the_device_side_elbos_equal_pyros(ours, pyros, guide, non_reparameterized, dtype):
    """Same noise: the same loss (to rounding: Pyro sums the sites' values as Python floats) and exactly the
    same gradients (the surrogate is Pyro's, term for term), with 2 particles vectorized."""
    torch.manual_seed(0)
    vae = VAE(ModelConfig(hidden=(16,), z_dim=3, image_shape=(28, 28), guide=guide)).to(dtype)
    x = torch.bernoulli(torch.rand(5, 784, dtype=dtype))
    options = dict(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    our_loss, our_grads = loss_and_gradients(ours(**options), vae, x, non_reparameterized)
    pyro_loss, pyro_grads = loss_and_gradients(pyros(**options), vae, x, non_reparameterized)
    assert torch.allclose(our_loss, pyro_loss, rtol=4 * torch.finfo(dtype).eps, atol=0)
    assert len(our_grads) == len(pyro_grads) and all(map(torch.equal, our_grads, pyro_grads))
