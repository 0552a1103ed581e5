"""`--compile`: the loss traced once per batch shape into a graph (`core.compiled`) and compiled into kernels:
the graph equal to Pyro's eager loss bit for bit on the same noise, the kernels to rounding, with exact
resume, Pyro's validation on the first step, and one-line refusals."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import rtol_for
from torch._inductor import config as inductor_config

import pyro_vae
from pyro_vae.cli.train import main
from pyro_vae.core.compiled import BACKENDS, NOT_TRACEABLE, CompiledLoss, check_compiler, kernel_options
from pyro_vae.core.estimators import ESTIMATORS, ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.training.checkpoint import store
from pyro_vae.training.checkpoint.resume import resumed_config
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.optimizer import SVIOptimizer
from pyro_vae.training.step import Batch, svi_step

TRACEABLE = [name for name in ESTIMATORS if name not in NOT_TRACEABLE]
FORWARD_TRACEABLE = [name for name in TRACEABLE if name != "dreg"]  # dreg's hook needs the step's graph
MULTI_SAMPLE = {"iwae": 3, "dreg": 3, "miwae": 3, "piwae": 3, "ciwae": 3}
SMALL = ["--hidden", "32", "--z-dim", "2", "--no-progress", "--threads", "1"]


def small_loss(estimator: str, device: torch.device, **model) -> ELBOLoss:
    torch.manual_seed(0)
    vae = VAE(ModelConfig(hidden=(16,), z_dim=3, image_shape=(28, 28), **model)).to(device)
    return ELBOLoss(vae, build_elbo(estimator, num_particles=MULTI_SAMPLE.get(estimator, 1), copies=2))


def steps(mode: str, estimator: str, device: torch.device, kl: float = 1.0, **model) -> tuple[list, list]:
    """Three Adam steps by `svi_step` (the last on a smaller batch, a second shape): "eager", or compiled with
    backend "graph" (PyTorch's own kernels) as a training step's graph of the loss and its backward ("step",
    what training runs) or as a graph of the loss alone that autograd differentiates ("forward"): the losses
    and the final parameters."""
    loss = small_loss(estimator, device, **model)
    vae = loss.vae
    if mode != "eager":
        compiled = CompiledLoss(loss, backend="graph")
        loss = compiled if mode == "step" else lambda x, kl_weight, rows: compiled(x, kl_weight, rows)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    losses = []
    for batch in (8, 8, 5):
        x = torch.bernoulli(torch.rand(batch, 784, device=device))
        value, finite = svi_step(loss, optimizer, Batch(x), kl)
        assert finite
        losses.append(value)
    return losses, [p.detach().clone() for p in vae.parameters()]


def assert_identical(a: tuple[list, list], b: tuple[list, list]) -> None:
    assert all(map(torch.equal, a[0], b[0])), (a[0], b[0])
    assert all(map(torch.equal, a[1], b[1]))


@pytest.mark.parametrize(
    "estimator, mode", [(name, "step") for name in TRACEABLE] + [(name, "forward") for name in FORWARD_TRACEABLE]
)
def test_the_compiled_step_is_the_eager_step_bit_for_bit(estimator, mode, device):
    assert_identical(steps("eager", estimator, device), steps(mode, estimator, device))


@pytest.mark.parametrize(
    "model",
    [dict(guide="full-covariance"), dict(guide="flow"), dict(guide="delta"),
     dict(likelihood="continuous-bernoulli"), dict(likelihood="gaussian", learn_sigma=True),
     dict(stochastic_layers=2, z2_dim=2, hidden2=(8,))],
)  # fmt: skip
@pytest.mark.parametrize("estimator", ["trace", "meanfield"])
def test_every_guide_and_likelihood_compiles_to_the_same_numbers(estimator, model):
    cpu = torch.device("cpu")
    assert_identical(steps("eager", estimator, cpu, **model), steps("step", estimator, cpu, **model))


@pytest.mark.parametrize("mode", ["step", "forward"])
def test_a_zero_kl_weight_masks_the_z_site_in_its_own_graph(mode):
    assert_identical(
        steps("eager", "trace", torch.device("cpu"), kl=0.0), steps(mode, "trace", torch.device("cpu"), kl=0.0)
    )


def test_a_kl_weight_below_one_is_an_input_of_the_graph_equal_to_rounding():
    """Eagerly Pyro multiplies the scales as Python floats, in the graph as a float32 tensor: the last bits
    may differ, nothing more."""
    (eager_losses, eager), (graph_losses, graph) = (
        steps(mode, "trace", torch.device("cpu"), kl=0.3) for mode in ("eager", "step")
    )
    assert torch.allclose(torch.stack(eager_losses), torch.stack(graph_losses), rtol=1e-6, atol=0)
    assert all(torch.allclose(p, q, rtol=1e-4, atol=1e-6) for p, q in zip(eager, graph))


@pytest.mark.parametrize("backend", ["eager", *BACKENDS])
def test_a_step_that_is_not_finite_is_skipped_by_the_graphs_own_test(backend):
    """A NaN weight: the compiled step's finite flag (computed inside its graph) is False, as the eager
    step's, and fused Adam leaves every parameter where it was."""
    loss = small_loss("trace", torch.device("cpu"))
    vae = loss.vae
    loss = loss if backend == "eager" else CompiledLoss(loss, backend=backend)
    optimizer = SVIOptimizer(list(vae.parameters()), lr=1e-2)
    x = torch.bernoulli(torch.rand(8, 784))
    svi_step(loss, optimizer, Batch(x))  # validates, traces and compiles
    with torch.no_grad():
        next(vae.decoder.parameters()).view(-1)[0] = float("nan")
    before = [p.detach().clone() for p in vae.parameters()]
    value, finite = svi_step(loss, optimizer, Batch(x))
    assert value.isnan() and not finite
    assert all(torch.allclose(p, q, rtol=0, atol=0, equal_nan=True) for p, q in zip(vae.parameters(), before))


def test_the_first_call_runs_pyros_validation_before_tracing():
    vae = VAE(ModelConfig(hidden=(8,), z_dim=2, image_shape=(28, 28)))
    loss = CompiledLoss(ELBOLoss(vae, build_elbo("trace")))
    with pytest.raises(ValueError, match="support"):
        loss(torch.full((4, 784), 0.5), 1.0)  # grey pixels under a Bernoulli likelihood
    assert loss.graphs == {}


class BranchingEncoder(torch.nn.Module):
    """An encoder whose path depends on a value: tracing it would bake one branch in."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(784, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.layer(x.flatten(1))
        if h.mean() > 100:
            h = 2 * h
        return h[:, :2], h[:, 2:].exp()


def test_a_part_that_branches_on_a_value_is_refused_not_baked_in(tmp_path):
    images = torch.bernoulli(torch.rand(32, 28, 28))
    config = TrainConfig(model=ModelConfig(z_dim=2), epochs=1, compile=True, out=str(tmp_path / "run"))
    with pytest.raises(
        ConfigError, match=r"^compile could not trace the loss \(.*\); a part that reads a tensor's value"
    ):
        pyro_vae.train(
            config,
            data=(images, images[:8]),
            encoder=BranchingEncoder(),
            decoder=torch.nn.Linear(2, 784),
            progress=False,
        )


def loss_and_gradients(loss, x: torch.Tensor, mode: str = "forward") -> list[torch.Tensor]:
    """The loss and its gradients on the draws of seed 1: by autograd over `loss`, or from a compiled loss's
    step graph (mode "step")."""
    torch.manual_seed(1)
    if mode == "step":
        value, gradients, finite = loss.loss_and_gradients(x, 1.0, None, list(loss.parameters()))
        assert finite
        return [value, *gradients]
    value = loss(x, 1.0)
    return [value.detach()] + list(torch.autograd.grad(value, list(loss.parameters())))


@pytest.mark.parametrize(
    "estimator, model, mode",
    [
        ("trace", {}, "step"),
        ("meanfield", {}, "step"),
        ("iwae", {}, "step"),
        ("dreg", {}, "step"),
        ("trace", dict(stochastic_layers=2), "step"),
        ("trace", dict(guide="flow"), "step"),
        ("trace", {}, "forward"),
    ],
)
def test_the_compiled_kernels_equal_the_eager_loss_and_gradients_to_rounding(estimator, model, mode, device, dtype):
    """The same draws (the loss would differ by nats otherwise); fused kernels only sum in their own order:
    relative differences of a few hundred ulps (`rtol_for`), on the CPU in float64."""
    eager = small_loss(estimator, device, **model).to(dtype)
    x = torch.bernoulli(torch.rand(8, 784, device=device, dtype=dtype))
    kernels = CompiledLoss(small_loss(estimator, device, **model).to(dtype), backend="inductor")
    expected, got = loss_and_gradients(eager, x), loss_and_gradients(kernels, x, mode)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=rtol_for(dtype), atol=rtol_for(dtype) * a.abs().max().item())
    assert len(kernels.graphs) == 1 and callable(next(iter(kernels.graphs.values())))


def test_the_kernels_keep_pytorchs_draws_and_on_cuda_run_in_cuda_graphs():
    """What a CPU can check of the CUDA route: the options inductor is given (measured on a GPU in docs)."""
    assert kernel_options(torch.device("cpu")) == {"fallback_random": True, "triton.cudagraphs": False}
    assert kernel_options(torch.device("cuda", 0)) == {"fallback_random": True, "triton.cudagraphs": True}


def test_without_a_cpp_compiler_inductor_is_refused_in_one_line_and_graph_needs_none():
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/c++")}):
        with pytest.raises(ConfigError, match=r"^compile with compile_backend inductor writes C\+\+ kernels, and no"):
            check_compiler("inductor", torch.device("cpu"))
        check_compiler("graph", torch.device("cpu"))
    check_compiler("inductor", torch.device("cpu"))  # this machine has one


def test_validating_tracing_and_compiling_draw_nothing_the_step_draws_what_eager_draws():
    """The first compiled step validates eagerly, traces, compiles and runs its kernels once (each given its
    generator state back), then steps: the generator ends where one eager step leaves it."""
    x = torch.bernoulli(torch.rand(4, 784))
    eager, loss = small_loss("trace", torch.device("cpu")), CompiledLoss(small_loss("trace", torch.device("cpu")))
    torch.manual_seed(5)
    eager(x, 1.0)
    after_eager = torch.get_rng_state()
    torch.manual_seed(5)
    loss.loss_and_gradients(x, 1.0, None, list(loss.parameters()))
    assert torch.equal(after_eager, torch.get_rng_state()) and len(loss.graphs) == 1


@pytest.mark.parametrize("estimator", sorted(NOT_TRACEABLE))
def test_an_estimator_a_graph_cannot_hold_is_refused_in_one_line(estimator):
    with pytest.raises(ConfigError, match=rf"^compile cannot trace estimator {estimator}: it "):
        TrainConfig(estimator=estimator, compile=True)
    with pytest.raises(ConfigError, match="leave out compile or validate_every_step"):
        TrainConfig(compile=True, validate_every_step=True)


def test_dregs_loss_alone_is_refused_because_its_gradient_hook_would_be_lost():
    """dreg's encoder gradient comes from a hook on z: a step's graph (below autograd) records what the hook
    does, a graph of the loss alone would silently drop it."""
    loss = CompiledLoss(small_loss("dreg", torch.device("cpu")), backend="graph")
    with pytest.raises(ConfigError, match="^the loss of estimator dreg reweights z's gradient with a backward hook"):
        loss(torch.bernoulli(torch.rand(4, 784)), 1.0)


def test_the_local_guide_compiles_on_the_graph_backend_bit_for_bit_and_inductor_is_refused(tmp_path):
    """Its table's sparse gradients: the step graph carries them (the test points' pass too, which
    differentiates the table alone); inductor cannot compile them, which is said before anything runs."""
    with pytest.raises(ConfigError, match="^guide local's table gets sparse gradients, which inductor cannot"):
        TrainConfig(compile=True, model=ModelConfig(guide="local"))
    local = SMALL + ["--guide", "local", "--local-points", "64", "--batch-size", "32", "--epochs", "2"]
    assert main(local + ["--out", str(tmp_path / "eager")]) == 0
    assert main(local + ["--compile", "--compile-backend", "graph", "--out", str(tmp_path / "graph")]) == 0
    eager, graph = model_state(tmp_path / "eager"), model_state(tmp_path / "graph")
    assert all(torch.equal(eager[k], graph[k]) for k in eager)


def model_state(run: Path) -> dict:
    return store.load(run / "checkpoint.pt").model_state


def test_compile_from_the_command_line_trains_resumes_exactly_and_equals_eager(tmp_path, capsys):
    """With a KL warm-up (a KL weight that changes every step), so the graph's weight input is exercised."""
    common = SMALL + ["--kl-warmup", "2"]
    assert main(common + ["--compile", "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert re.search(
        r"traced the loss and its gradients for batches of 256 .*, compiled into kernels in", capsys.readouterr().err
    )
    assert main(SMALL + ["--resume", str(tmp_path / "a"), "--epochs", "4"]) == 0
    assert main(common + ["--compile", "--epochs", "4", "--out", str(tmp_path / "b")]) == 0
    a, b = model_state(tmp_path / "a"), model_state(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    graph = ["--compile", "--compile-backend", "graph", "--epochs", "1"]
    assert main(SMALL + graph + ["--out", str(tmp_path / "c")]) == 0
    assert main(SMALL + ["--epochs", "1", "--out", str(tmp_path / "d")]) == 0  # KL weight 1: eager, bit for bit
    c, d = model_state(tmp_path / "c"), model_state(tmp_path / "d")
    assert all(torch.equal(c[k], d[k]) for k in c)


def test_a_run_from_before_the_backend_setting_resumes_on_the_graph_it_ran():
    """config.json of a --compile run written before `compile_backend` existed: it ran the graph, so it resumes
    on the graph (exactly), not on inductor's kernels; a run that names its backend keeps it."""
    old = asdict(TrainConfig(compile=True))
    del old["compile_backend"]
    assert resumed_config(SimpleNamespace(config=old), {}).compile_backend == "graph"
    new = asdict(TrainConfig(compile=True))
    assert resumed_config(SimpleNamespace(config=new), {}).compile_backend == "inductor"
    eager = asdict(TrainConfig())
    del eager["compile_backend"]
    assert resumed_config(SimpleNamespace(config=eager), {}).compile_backend == "inductor"


def test_a_backend_without_compile_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="^compile_backend graph chooses what runs compile's graph; add compile$"):
        TrainConfig(compile_backend="graph")


def test_an_optimizer_over_other_parameters_is_refused_in_one_line():
    loss = CompiledLoss(small_loss("trace", torch.device("cpu")), backend="graph")
    stranger = torch.nn.Parameter(torch.zeros(3))
    optimizer = SVIOptimizer([*loss.parameters(), stranger], lr=1e-2)
    with pytest.raises(ConfigError, match=r"^the optimizer's parameter\(s\) \[\d+\] are not the compiled loss's"):
        svi_step(loss, optimizer, Batch(torch.bernoulli(torch.rand(4, 784))))


def test_an_eager_run_resumes_compiled_with_a_notice_and_on_the_graph_bit_for_bit(tmp_path, capsys):
    """--compile may be turned on at a resume (a long run made faster); the start says the run no longer
    continues bit for bit in general, and on the graph backend at a KL weight of 1 it still does."""
    assert main(SMALL + ["--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    graph = ["--compile", "--compile-backend", "graph"]
    assert main(SMALL + graph + ["--resume", str(tmp_path / "a"), "--epochs", "2"]) == 0
    assert "notice: this run trained eagerly and resumes compiled (graph): the loss" in capsys.readouterr().err
    assert main(SMALL + ["--epochs", "2", "--out", str(tmp_path / "b")]) == 0
    a, b = model_state(tmp_path / "a"), model_state(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_the_finite_test_reads_a_sparse_gradient_by_its_values(bad):
    """The local guide's table has a sparse gradient: a NaN or an infinity stored in it makes the step's finite
    test False, and finite values leave it True (on every PyTorch, including those with no sparse norm)."""
    from pyro_vae.core.gradients import all_finite

    values = torch.tensor([[0.5, -1.0], [2.0, 3.0]])
    if bad is not None:
        values[1, 0] = bad
    table = torch.sparse_coo_tensor(torch.tensor([[3, 7]]), values, (10, 2), check_invariants=True)
    assert all_finite(torch.tensor(1.0), [table, torch.ones(3), None]).item() is (bad is None)
