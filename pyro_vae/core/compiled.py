"""The loss traced into one graph of PyTorch operations: Pyro's Python runs once per input shape, and every
step after that runs the graph (`--compile`).

    graph = make_fx(loss)(parameters, x, beta)    Pyro's model, guide and estimator, run once, recorded op by op
    loss(x, beta) = graph(parameters, x, beta)    the same operations; the noise drawn afresh from the same generator

Pyro stays the source of the loss: the graph is what its model, guide and estimator executed, traced by
PyTorch's `make_fx` (the tracer under `torch.compile`'s AOTAutograd) on fake tensors, above autograd
(pre-dispatch, so `detach` and `no_grad` are kept), with the parameters as inputs, so autograd
differentiates the graph as it would the eager code. Tracing on fake tensors draws no random numbers, so the
graph's draws are the eager loss's draws: on the same noise the loss and the gradients are
the eager ones, bit for bit at a KL weight of 1 (`tests/test_compiled.py`), and a run resumes exactly.
On a new shape (the last, smaller batch of an epoch) the loss is traced again; the KL weight is an input
of the graph, except 0, which masks the z site out and has a graph of its own. The first call still runs
Pyro's eager loss with its validation (its result is thrown away and its draws given back), so a wrong shape
or an out-of-support value stops the run before anything is traced.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_vae.core.estimators import ELBOLoss
from pyro_vae.errors import ConfigError

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


class CompiledLoss(nn.Module):
    """`loss(x, kl_scale, rows)` of an `ELBOLoss`, run as a traced graph; `log` hears of each tracing."""

    def __init__(self, loss: ELBOLoss, log: Callable[[str], None] = lambda line: None):
        super().__init__()
        self.loss = loss
        self.log = log
        self.graphs: dict[tuple, torch.fx.GraphModule] = {}

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

    def _trace(self, key: tuple, x: torch.Tensor, beta, rows: torch.Tensor | None) -> torch.fx.GraphModule:
        """The graph for inputs like these. The first call runs Pyro's eager loss with its validation, with
        the generators' states given back afterwards (tracing on fake tensors draws nothing)."""
        tic = time.perf_counter()
        if not self.loss.validated:
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                self.loss(x, beta, rows)  # Pyro's validation, eagerly, on the first inputs
        graph = traced(self.loss, self._state(), x, beta, rows)
        self.graphs[key] = graph
        seconds = time.perf_counter() - tic
        self.log(
            f"traced the loss for batches of {key[0][0]} into {len(graph.graph.nodes)} operations in {seconds:.1f} s"
        )
        return graph


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
