"""One SVI step, the unit every training loop calls: the engine, the estimator comparison, the 2-D
ground-truth helpers, the local guide's test-point fit and the benchmarks.

    loss = -ELBO(x) per image   ->   backward   ->   optimizer step, unless a value is not finite

It is what `pyro.infer.SVI.step` does, with a torch optimizer over a module's own parameters instead of
Pyro's global param store. It never waits for the device: whether the loss and the gradients are finite
stays a flag on the device, which a fused torch optimizer reads to skip its update by itself (the
mechanism mixed-precision scaling uses). Only an optimizer with no such skip (SparseAdam, the for-loop
torch optimizers) makes the host read the flag. A compiled loss (`core.compiled.CompiledLoss`, `--compile`)
gives the loss, its gradients and the finite flag from one graph (`loss_and_gradients`), in place of the
backward and the test.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch

from pyro_vae.core.gradients import all_finite
from pyro_vae.distributed import SINGLE, World

LossFunction = Callable[..., torch.Tensor]  # loss(x, kl_weight, given) -> the negative ELBO per image


class Batch(NamedTuple):
    """One batch: the images x and, where a guide keeps parameters per data point, their row numbers, or,
    for a program of images and labels, their labels (-1 where missing)."""

    x: torch.Tensor
    rows: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def given(self) -> torch.Tensor | None:
        """What the loss reads of each image beside its pixels (its third argument): the rows, or the labels."""
        return self.rows if self.rows is not None else self.labels


class SkippingOptimizer(Protocol):
    """An optimizer that skips its own update when told, on the device (see `optimizer.SVIOptimizer`)."""

    param_groups: list[dict]

    def step_unless(self, bad: torch.Tensor) -> None: ...


def svi_step(
    loss: LossFunction,
    optimizer: torch.optim.Optimizer | SkippingOptimizer,
    batch: Batch,
    kl_weight: float | torch.Tensor = 1.0,
    weight: float = 1.0,
    world: World = SINGLE,
    only_optimized: bool = False,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on `batch`: L = loss(x, kl_weight, given), the gradient of weight * L, and the optimizer's
    update unless L or a gradient is not finite on some rank. Returns (L detached, finite), on the device.

    `weight` = (this rank's images) * ranks / (batch's images) under data parallelism, so that DDP's average
    of the ranks' gradients is the gradient of the whole batch's mean loss. `only_optimized` sends the
    gradient to the optimizer's parameters alone (the rest, a decoder held fixed, gets no .grad); `backward`,
    if given, is what differentiates the loss (Lightning's `manual_backward`, which DDP under Lightning needs)."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    compiled_step = getattr(loss, "loss_and_gradients", None)  # a compiled loss: loss and backward in one graph
    if compiled_step is not None:
        value, gradients, finite = compiled_step(batch.x, kl_weight, batch.given, parameters, weight)
        for parameter, gradient in zip(parameters, gradients):
            parameter.grad = gradient
    else:
        for parameter in parameters:
            parameter.grad = None
        value = loss(batch.x, kl_weight, batch.given)
        weighted = value if weight == 1 else value * weight
        if backward is not None:
            backward(weighted)
        else:
            weighted.backward(inputs=parameters if only_optimized else None)
        finite = all_finite(value, [parameter.grad for parameter in parameters])
    bad = world.any(~finite)
    step_unless(optimizer, bad)
    return value.detach(), ~bad


def step_unless(optimizer: torch.optim.Optimizer | SkippingOptimizer, bad: torch.Tensor) -> None:
    """The optimizer's update, skipped where `bad` (a bool tensor) is true: on the device for fused torch
    optimizers (found_inf) and our own (`step_unless`), else by reading the flag on the host."""
    if hasattr(optimizer, "step_unless"):
        optimizer.step_unless(bad)
    elif optimizer.defaults.get("fused"):
        optimizer.found_inf = bad.float()
        optimizer.step()
    elif not bad.item():
        optimizer.step()
