"""The loss traced into one graph of PyTorch operations, and the graph compiled into fused kernels: Pyro's
Python runs once per input shape, and every step after that runs the kernels (`--compile`).

    graph = make_fx(loss)(parameters, x, beta)    Pyro's model, guide and estimator, run once, recorded op by op
    kernels = torch.compile(graph)                 inductor: the graph's forward and backward fused into C++
                                                   (CPU) or Triton (CUDA, captured in CUDA graphs) kernels
    loss(x, beta) = kernels(parameters, x, beta)  the same operations; the noise drawn afresh from the same generator

Pyro stays the source of the loss: the graph is what its model, guide and estimator executed, traced by
PyTorch's `make_fx` (the tracer under `torch.compile`'s AOTAutograd) on fake tensors, above autograd
(pre-dispatch, so `detach` and `no_grad` are kept), with the parameters as inputs. Tracing on fake tensors
draws no random numbers, and the kernels draw theirs with PyTorch's own random operations (inductor's
`fallback_random`), so the compiled loss draws the eager loss's noise: on the same noise its loss and
gradients equal the eager ones to rounding (fused kernels round in their own order), and a run resumes
exactly. With backend "graph" the graph runs on PyTorch's own kernels, autograd differentiating it as it
would the eager code: bit for bit the eager loss at a KL weight of 1, and no compiler needed
(`tests/test_compiled.py`). On a new shape (the last, smaller batch of an epoch) the loss is traced and
compiled again; the KL weight is an input of the graph, except 0, which masks the z site out and has a
graph of its own. The first call still runs Pyro's eager loss with its validation (its result is thrown
away and its draws given back), so a wrong shape or an out-of-support value stops the run before anything
is traced.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_vae.core.estimators import ELBOLoss
from pyro_vae.errors import ConfigError

BACKENDS = ("inductor", "graph")  # what runs the traced graph: fused compiled kernels, or PyTorch's own
NOT_TRACEABLE = {  # estimators whose gradient a forward graph cannot hold
    "jit-trace": "is already compiled, by TorchScript",
    "jit-meanfield": "is already compiled, by TorchScript",
    "dreg": "reweights z's gradient with a backward hook, which a traced forward graph does not keep",
    "score": "tracks provenance with a tensor subclass (TraceGraph_ELBO's) that the tracer cannot wrap",
    "score-baseline": "tracks provenance with a tensor subclass (TraceGraph_ELBO's) that the tracer cannot wrap",
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
    """`loss(x, kl_scale, rows)` of an `ELBOLoss`, run as a traced graph compiled by `backend` (one of
    BACKENDS); `log` hears of each tracing."""

    def __init__(self, loss: ELBOLoss, log: Callable[[str], None] = lambda line: None, backend: str = "inductor"):
        super().__init__()
        if backend not in BACKENDS:
            raise ConfigError(f"@compile_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.loss = loss
        self.log = log
        self.backend = backend
        self.graphs: dict[tuple, Callable] = {}

    def forward(
        self, x: torch.Tensor, kl_scale: float | torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        masked = not isinstance(kl_scale, torch.Tensor) and kl_scale == 0
        beta = kl_scale if masked else torch.as_tensor(kl_scale, dtype=x.dtype, device=x.device)
        key = (tuple(x.shape), x.dtype, x.device, None if rows is None else tuple(rows.shape), masked)
        graph = self.graphs.get(key)
        graph = self._trace(key, x, beta, rows) if graph is None else graph
        return graph(self._state(), x, beta, rows)

    def _state(self) -> dict[str, torch.Tensor]:
        return {**dict(self.loss.named_parameters()), **dict(self.loss.named_buffers())}

    def _trace(self, key: tuple, x: torch.Tensor, beta, rows: torch.Tensor | None) -> Callable:
        """The graph for inputs like these, compiled. The first call runs Pyro's eager loss with its
        validation, and compiling runs the kernels once forward and backward; the generators' states are
        given back after both (tracing on fake tensors draws nothing)."""
        tic = time.perf_counter()
        if not self.loss.validated:
            with torch.random.fork_rng(devices=cuda_devices(x)):
                self.loss(x, beta, rows)  # Pyro's validation, eagerly, on the first inputs
        graph = traced(self.loss, self._state(), x, beta, rows)
        line = f"traced the loss for batches of {key[0][0]} into {len(graph.graph.nodes)} operations in "
        line += f"{time.perf_counter() - tic:.1f} s"
        if self.backend == "inductor":
            tic = time.perf_counter()
            graph = compiled_kernels(graph, self._state(), x, beta, rows)
            line += f", compiled into kernels in {time.perf_counter() - tic:.1f} s"
        self.graphs[key] = graph
        self.log(line)
        return graph


def compiled_kernels(graph: torch.fx.GraphModule, state: dict, *inputs) -> Callable:
    """`graph` compiled by inductor (its forward and backward, at these inputs' shapes), run once forward
    and backward so that compiling happens now, the generators' states given back afterwards. Its random
    operations stay PyTorch's (`fallback_random`), so it draws the graph's noise from the same generator; on
    CUDA its kernels are captured in CUDA graphs."""
    options = kernel_options(inputs[0].device)
    kernels = torch.compile(graph, backend="inductor", fullgraph=True, dynamic=False, options=options)
    trainable = [value for value in state.values() if value.requires_grad]
    try:
        with torch.random.fork_rng(devices=cuda_devices(inputs[0])):
            torch.autograd.grad(kernels(state, *inputs), trainable, allow_unused=True)
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

    try:
        graph = make_fx(loss_of, tracing_mode="fake", pre_dispatch=True)(state, *inputs)
    except RuntimeError as error:  # a value read in Python (bool, item), or an operation fake tensors lack
        first_line = (str(error).strip().splitlines() or ["a value was read"])[0][:200]
        raise ConfigError(
            f"@compile could not trace the loss ({type(error).__name__}: {first_line}); a part that reads a "
            "tensor's value in Python (an if on a tensor, .item()) cannot be traced: run without @compile"
        ) from None
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph
