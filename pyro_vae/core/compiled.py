"""The loss traced into one graph of PyTorch operations, and the graph compiled into fused kernels: Pyro's
Python runs once per input shape, and every step after that runs the kernels (`--compile`).

    graph = make_fx(step)(parameters, x, kl_weight)     Pyro's model, guide and estimator, and autograd's backward
                                                   of their loss, run once, recorded op by op
    kernels = torch.compile(graph)                 inductor: the whole step's arithmetic fused into C++ (CPU)
                                                   or Triton (CUDA, captured in CUDA graphs) kernels
    L, dL/dparameters, finite = kernels(parameters, x, kl_weight)   the same operations, the noise drawn afresh

Pyro stays the source of the loss: the graph is what its model, guide and estimator executed, traced by
PyTorch's `make_fx` (the tracer under `torch.compile`'s AOTAutograd) on fake tensors, with the parameters
as inputs. A training step (`loss_and_gradients`, what `svi_step` calls) is traced below autograd: the
loss, its backward (backward hooks included, so dreg's reweighting too) and the test that both are finite
in one graph, which inductor fuses whole. The loss alone (`forward`, differentiated by autograd as usual)
is traced above autograd (pre-dispatch, so `detach` and `no_grad` are kept).

Tracing on fake tensors draws no random numbers, and the kernels draw theirs with PyTorch's own random
operations (inductor's `fallback_random`), so the compiled loss draws the eager loss's noise: on the same
noise its loss and gradients equal the eager ones to rounding (fused kernels round in their own order), and
a run resumes exactly. With backend "graph" the graph runs on PyTorch's own kernels: bit for bit the eager
step at a KL weight of 1, and no compiler needed (`tests/test_compiled.py`). On a new shape (the last,
smaller batch of an epoch) the graph is traced and compiled again; the KL weight is an input of the graph,
except 0, which masks the z site out and has a graph of its own. The first call still runs Pyro's eager
loss with its validation (its result is thrown away and its draws given back), so a wrong shape or an
out-of-support value stops the run before anything is traced.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_vae.core.estimators import ELBOLoss
from pyro_vae.core.gradients import all_finite
from pyro_vae.core.iwae_estimators import DReG_ELBO
from pyro_vae.errors import ConfigError

BACKENDS = ("inductor", "graph")  # what runs the traced graph: fused compiled kernels, or PyTorch's own
NOT_TRACEABLE = {  # estimators whose gradient a graph cannot hold
    "jit-trace": "is already compiled, by TorchScript",
    "jit-meanfield": "is already compiled, by TorchScript",
    "score": "tracks provenance with a tensor subclass (TraceGraph_ELBO's) that the tracer cannot wrap",
    "score-baseline": "tracks provenance with a tensor subclass (TraceGraph_ELBO's) that the tracer cannot wrap",
    "enum": "sums the enumerated sites out by Pyro's tensor contraction, which branches on tensors' values",
}


def check_traceable(estimator: str) -> None:
    """Refuse, in one line, an estimator the graph cannot represent."""
    if estimator in NOT_TRACEABLE:
        raise ConfigError(f"@compile cannot trace @estimator {estimator}: it {NOT_TRACEABLE[estimator]}")


def check_compiler(backend: str, device: torch.device) -> None:
    """Refuse, in one line, inductor on a CPU without a working C++ compiler (it writes C++ kernels)."""
    if backend != "inductor" or device.type != "cpu":
        return
    from torch._inductor import cpp_builder  # PyTorch's own search ($CXX, else g++), as inductor will do it

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as error:
        raise ConfigError(
            f"@compile with @compile_backend inductor writes C++ kernels, and no C++ compiler was found "
            f"({str(error).strip().splitlines()[0][:160]}): install g++ (or set $CXX), or use "
            "@compile_backend graph, which needs none"
        ) from None


class CompiledLoss(nn.Module):
    """`loss(x, kl_weight, given)` of an `ELBOLoss`, run as a traced graph compiled by `backend` (one of
    BACKENDS), and `loss_and_gradients` for a training step: the loss and its gradients from one graph;
    `log` hears of each tracing."""

    def __init__(self, loss: ELBOLoss, log: Callable[[str], None] = lambda line: None, backend: str = "inductor"):
        super().__init__()
        if backend not in BACKENDS:
            raise ConfigError(f"@compile_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.loss = loss
        self.log = log
        self.backend = backend
        self.graphs: dict[tuple, Callable] = {}  # by the inputs' shapes, and the parameters differentiated
        self.names = {parameter: name for name, parameter in loss.named_parameters()}

    def forward(
        self, x: torch.Tensor, kl_weight: float | torch.Tensor, given: torch.Tensor | None = None
    ) -> torch.Tensor:
        if isinstance(self.loss.elbo, DReG_ELBO):
            raise ConfigError(
                "the loss of @estimator dreg reweights z's gradient with a backward hook, which a graph of the "
                "loss alone does not keep: take its gradients with loss_and_gradients (what svi_step calls)"
            )
        kl_weight = graph_input(kl_weight, x)
        key = (*input_key(x, kl_weight, given), None)
        if key not in self.graphs:
            self.graphs[key] = self._compiled(key, traced, self._state(), x, kl_weight, given)
        return self.graphs[key](self._state(), x, kl_weight, given)

    def loss_and_gradients(
        self,
        x: torch.Tensor,
        kl_weight: float | torch.Tensor,
        given: torch.Tensor | None,
        parameters: list[torch.Tensor],
        weight: float = 1.0,
    ) -> tuple[torch.Tensor, list[torch.Tensor | None], torch.Tensor]:
        """(L, d(weight L)/d parameters, whether L and every gradient are finite) for L = loss(x, kl_weight,
        given), from one graph of the loss and its backward (None for a parameter L does not depend on). The
        graph holds its own backward, so it runs outside autograd (no_grad), on the parameters themselves:
        inputs whose addresses never change, which CUDA graphs keep in place instead of copying each step."""
        kl_weight, weight = graph_input(kl_weight, x), torch.as_tensor(weight, dtype=x.dtype, device=x.device)
        key = (*input_key(x, kl_weight, given), self._names_of(parameters))
        with torch.no_grad():
            if key not in self.graphs:
                trace = partial(traced_step, names=key[-1])
                self.graphs[key] = self._compiled(key, trace, self._state(), x, kl_weight, given, weight)
            return self.graphs[key](self._state(), x, kl_weight, given, weight)

    def _names_of(self, parameters: list[torch.Tensor]) -> tuple[str, ...]:
        missing = [index for index, parameter in enumerate(parameters) if parameter not in self.names]
        if missing:
            raise ConfigError(
                f"the optimizer's parameter(s) {missing} are not the compiled loss's: build the optimizer over "
                "the parameters of the VAE inside it"
            )
        return tuple(self.names[parameter] for parameter in parameters)

    def _state(self) -> dict[str, torch.Tensor]:
        return {**dict(self.loss.named_parameters()), **dict(self.loss.named_buffers())}

    def _compiled(self, key: tuple, trace: Callable, state: dict, x: torch.Tensor, kl_weight, given, *more) -> Callable:
        """The graph `trace` makes for inputs like these, compiled. The first call runs Pyro's eager loss with
        its validation, and compiling runs the kernels once; the generators' states are given back after
        both (tracing on fake tensors draws nothing)."""
        tic = time.perf_counter()
        if not self.loss.validated:
            with torch.random.fork_rng(devices=cuda_devices(x)):
                self.loss(x, kl_weight, given)  # Pyro's validation, eagerly, on the first inputs
        graph = trace(self.loss, state, x, kl_weight, given, *more)
        what = "the loss" if key[-1] is None else "the loss and its gradients"
        line = f"traced {what} for batches of {key[0][0]} into {len(graph.graph.nodes)} operations in "
        line += f"{time.perf_counter() - tic:.1f} s"
        if self.backend == "inductor":
            tic = time.perf_counter()
            graph = compiled_kernels(graph, state, x, kl_weight, given, *more)
            line += f", compiled into kernels in {time.perf_counter() - tic:.1f} s"
        self.log(line)
        return graph


def graph_input(kl_weight: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """The KL weight as the graph takes it: a tensor input, except 0 (it masks the z site out: its own graph)."""
    masked = not isinstance(kl_weight, torch.Tensor) and kl_weight == 0
    return kl_weight if masked else torch.as_tensor(kl_weight, dtype=x.dtype, device=x.device)


def input_key(x: torch.Tensor, kl_weight: float | torch.Tensor, given: torch.Tensor | None) -> tuple:
    """What a graph is specialized to: the batch's shape, type and device, the given tensor's shape, a masked z site
    (a KL weight `graph_input` left a number)."""
    masked = not isinstance(kl_weight, torch.Tensor)
    return (tuple(x.shape), x.dtype, x.device, None if given is None else tuple(given.shape), masked)


def compiled_kernels(graph: torch.fx.GraphModule, state: dict, *inputs) -> Callable:
    """`graph` compiled by inductor (at these inputs' shapes), run once (a loss graph forward and backward)
    so that compiling happens now, the generators' states given back afterwards. Its random
    operations stay PyTorch's (`fallback_random`), so it draws the graph's noise from the same generator; on
    CUDA its kernels are captured in CUDA graphs."""
    options = kernel_options(inputs[0].device)
    kernels = torch.compile(graph, backend="inductor", fullgraph=True, dynamic=False, options=options)
    trainable = [value for value in state.values() if value.requires_grad]
    try:
        with torch.random.fork_rng(devices=cuda_devices(inputs[0])):
            result = kernels(state, *inputs)
            if isinstance(result, torch.Tensor) and result.requires_grad:  # a loss: its backward compiles now
                torch.autograd.grad(result, trainable, allow_unused=True)
    except Exception as error:  # the compiler's own failure, in one line
        first_line = (str(error).strip().splitlines() or ["failed"])[0][:200]
        raise ConfigError(
            f"@compile could not compile the traced loss into kernels ({type(error).__name__}: {first_line}); "
            "use @compile_backend graph, which runs the same graph on PyTorch's own kernels"
        ) from None
    return kernels


def cuda_devices(x: torch.Tensor) -> list[torch.device]:
    """The CUDA device whose generator `fork_rng` must give back besides the CPU's, if `x` is on one."""
    return [x.device] if x.device.type == "cuda" else []


def kernel_options(device: torch.device) -> dict:
    """Inductor's settings for the loss: PyTorch's random operations kept (the eager generator's draws, so a
    seed and a resume reproduce them), and on CUDA the kernels captured in CUDA graphs (one launch a step;
    `mode="reduce-overhead"`'s setting)."""
    return {"fallback_random": True, "triton.cudagraphs": device.type == "cuda"}


def traced(loss: nn.Module, state: dict, *inputs) -> torch.fx.GraphModule:
    """graph(state, *inputs) = loss(*inputs) with the module's parameters and buffers taken from `state`:
    traced on fake tensors (shapes only, no values, no random draws), above autograd, dead operations
    dropped. Code whose path depends on a value, such as `if h.mean() > 0` in an encoder, cannot be traced
    and is refused in one line, never baked in."""

    def loss_of(state: dict, *inputs) -> torch.Tensor:
        return torch.func.functional_call(loss, state, inputs)

    return traced_function(loss_of, state, *inputs, pre_dispatch=True)


def traced_function(function: Callable, state: dict, *inputs, pre_dispatch: bool) -> torch.fx.GraphModule:
    """make_fx's graph of function(state, *inputs) on fake tensors, dead operations dropped; a value read in
    Python refused in one line."""
    try:
        graph = make_fx(function, tracing_mode="fake", pre_dispatch=pre_dispatch)(state, *inputs)
    except RuntimeError as error:  # a value read in Python (bool, item), or an operation fake tensors lack
        first_line = (str(error).strip().splitlines() or ["a value was read"])[0][:200]
        raise ConfigError(
            f"@compile could not trace the loss ({type(error).__name__}: {first_line}); a part that reads a "
            "tensor's value in Python (an if on a tensor, .item()) cannot be traced: run without @compile"
        ) from None
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


def traced_step(loss: nn.Module, state: dict, *inputs, names: tuple[str, ...]) -> torch.fx.GraphModule:
    """graph(state, x, kl_weight, given, weight) = (L, d(weight L)/d state[names], whether L and every gradient are
    finite), L = loss(x, kl_weight, given): the loss and its backward traced together, below autograd (autograd's
    backward formulas recorded as operations), so that one compiled graph holds the whole step's arithmetic,
    the finite test included. The gradients are taken with respect to `state[names]`, made leaves of their own."""

    def step_of(state: dict, *inputs) -> tuple:
        *loss_inputs, weight = inputs
        with torch.enable_grad():  # the step runs under no_grad; its backward is traced here
            value = torch.func.functional_call(loss, state, tuple(loss_inputs))
            gradients = torch.autograd.grad(value * weight, [state[name] for name in names], allow_unused=True)
        return value.detach(), gradients, all_finite(value, gradients)

    leaves = {name: value.detach().requires_grad_(name in names) for name, value in state.items()}
    return traced_function(step_of, leaves, *inputs, pre_dispatch=False)
