"""The objective factory: one place where a run's loss and optimizer are assembled from its config,
as Flax's `create_train_state` is, for training, the estimator comparison, the throughput benchmark and
the tests alike.

    estimator (build_elbo) -> ELBOLoss(vae) -> CompiledLoss (--compile) -> DDP (several ranks)
    optimizer: SVIOptimizer (fused Adam; SparseAdam for the local guide's table)

`Objective(loss, optimizer)` is what `step.svi_step` takes: `svi_step(*objective, batch)`.
"""

from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pyro_vae.core.compiled import CompiledLoss, check_compiler
from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.program import Program
from pyro_vae.distributed import SINGLE, World
from pyro_vae.errors import ConfigError
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.optimizer import SVIOptimizer


class Objective(NamedTuple):
    """What a training step needs: the per-image loss(x, kl_weight, rows) and the optimizer over the model's
    parameters."""

    loss: nn.Module  # ELBOLoss, compiled, or DDP around either
    optimizer: SVIOptimizer


def make_objective(
    config: TrainConfig, vae: VAE | Program, world: World = SINGLE, log: Callable[[str], None] = lambda line: None
) -> Objective:
    """The loss (`make_loss`) and the optimizer (`make_optimizer`) of `config` for `vae`."""
    return Objective(make_loss(config, vae, world, log), make_optimizer(vae, config))


def make_loss(
    config: TrainConfig, vae: VAE | Program, world: World = SINGLE, log: Callable[[str], None] = lambda line: None
) -> nn.Module:
    """The per-image loss of `config` for `vae`: its estimator (K = num_particles, M = iwae_copies, ciwae's
    beta) as an ELBOLoss, traced and compiled with `config.compile` (`log` hears of each tracing), inside
    DDP when `world` has several ranks."""
    elbo = build_elbo(config.estimator, config.num_particles, config.iwae_copies, config.ciwae_beta)
    loss: nn.Module = ELBOLoss(vae, elbo, config.validate_every_step)
    device = next(vae.parameters()).device
    if config.compile:
        loss = compiled_loss(loss, config.compile_backend, world, device, log)
    if world.size > 1:
        loss = DistributedDataParallel(
            loss, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync_each_forward()
        )
    return loss


def make_optimizer(vae: VAE | Program, config: TrainConfig) -> SVIOptimizer:
    """Adam over the networks' parameters at `lr` and, for the local guide, SparseAdam over its per-point
    table at `local_lr` (see `optimizer.SVIOptimizer`)."""
    table = vae.q.table.weight if vae.is_local else None
    dense = [p for p in vae.parameters() if p is not table]
    betas = (config.adam_beta1, 0.999)
    return SVIOptimizer(dense, config.lr, betas, config.adam_eps, sparse=table, sparse_lr=config.local_lr)


def compiled_loss(
    loss: ELBOLoss, backend: str, world: World, device: torch.device, log: Callable[[str], None]
) -> CompiledLoss:
    """`--compile`: the loss as a graph traced once per batch shape and compiled by `backend`, in one process
    (the graph would bypass DDP's gradient averaging)."""
    if world.size > 1:
        raise ConfigError("@compile traces the loss of one process; start it without torchrun, or leave out @compile")
    if isinstance(loss.vae, Program) and loss.vae.borrowed:
        raise ConfigError(
            "@compile traces the program with its parameters as the graph's inputs, but the networks your program "
            f"registers with pyro.module ({', '.join(sorted(loss.vae.borrowed))}) compute with their own: make them "
            "attributes of a model or guide that is a module (a PyroModule), or leave out @compile"
        )
    check_compiler(backend, device)
    return CompiledLoss(loss, log, backend)


def no_buffer_sync_each_forward() -> dict:
    """DDP's option not to broadcast buffers before every forward: forward_sync_buffers where this PyTorch has
    it (it deprecates broadcast_buffers), broadcast_buffers on older ones (2.11 has only that)."""
    options = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
