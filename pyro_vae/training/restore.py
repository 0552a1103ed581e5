"""Restoring a run from its checkpoint: the run folder claimed, the checkpoint still the folder's, the
weights, optimizer states and this rank's generators loaded, and notices of what continues only to rounding
(another device, compilation, number of processes)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pyro

from pyro_vae import data
from pyro_vae.core.model import VAE
from pyro_vae.distributed import World
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.training.checkpoint import store
from pyro_vae.training.checkpoint.generators import rank_seed, set_rng_states
from pyro_vae.training.checkpoint.payload import Checkpoint
from pyro_vae.training.config import TrainConfig, stored_backend
from pyro_vae.training.optimizer import SVIOptimizer
from pyro_vae.training.progress import Progress
from pyro_vae.training.report.folder import RunFolder


def resumed_folder(
    config: TrainConfig,
    world: World,
    checkpoint: Checkpoint,
    vae: VAE,
    optimizer: SVIOptimizer,
    dataset: data.Dataset,
    log: Callable[[str], None],
) -> tuple[RunFolder, Progress]:
    """The run folder `config.out`, claimed, and the run restored from its `checkpoint`."""
    folder = RunFolder(Path(config.out), world.is_main)
    folder.claim(world)  # before touching anything: another process may be writing this folder
    folder.remove_stale_temporaries()
    try:
        check_unchanged(folder.checkpoint_path, checkpoint)
        state = restore(checkpoint, vae, optimizer, world, config.seed, log)
        if world.is_main:
            for notice in changed_machine(checkpoint.config, asdict(config)):
                log(f"notice: {notice}")
        labels = dataset.test_labels if vae.takes_labels else None
        evaluate.check_finite_model(
            vae, dataset.test, dataset.test_rows, consequence="training cannot go on from them", labels=labels
        )
        if state.permutation is not None and len(state.permutation) != dataset.train.shape[0]:
            raise ConfigError(
                f"{folder.checkpoint_path}: its epoch's permutation orders {len(state.permutation)} images, "
                f"but the run's training split has {dataset.train.shape[0]}"
            )
        state.permutation = None if state.permutation is None else state.permutation.to(dataset.train.device)
        folder.restart_metrics(state.metrics)
    except BaseException:
        folder.close()
        raise
    return folder, state


def changed_machine(stored: dict, resumed: dict) -> list[str]:
    """What changed between the run's way of computing and the resume's (device, compilation), each with what
    it costs: the run goes on from the same weights, optimizer state and position, but not bit for bit."""
    notices = []
    if stored.get("cuda", False) != resumed["cuda"]:
        where = {True: "on the GPU", False: "on the CPU"}
        notices.append(
            f"this run trained {where[stored.get('cuda', False)]} and resumes {where[resumed['cuda']]}: the noise "
            "and binarization come from that device's generator, so it does not continue bit for bit as it would have"
        )
    if compiled_as(stored) != compiled_as(resumed):
        notices.append(
            f"this run trained {compiled_as(stored)} and resumes {compiled_as(resumed)}: the loss and gradients are "
            "the same to rounding, so it does not continue bit for bit as it would have"
        )
    return notices


def compiled_as(config: dict) -> str:
    """How a run's steps run: "eagerly", or "compiled (<backend>)"."""
    return f"compiled ({stored_backend(config)})" if config.get("compile") else "eagerly"


def check_unchanged(path: Path, read: Checkpoint) -> None:
    """The checkpoint read before the folder was claimed is still the folder's: another process that was
    training there when the resume started may have finished since, writing later epochs."""
    epoch, step = store.position(path)
    if (epoch, step) != (read.progress.epoch, read.progress.step):
        raise ConfigError(
            f"{path} changed while this resume started (it was at step {read.progress.step}, it is now at "
            f"step {step}): another process was training this run; resume it again if it is unfinished"
        )


def restore(
    checkpoint: Checkpoint, vae: VAE, optimizer: SVIOptimizer, world: World, seed: int, log: Callable[[str], None]
) -> Progress:
    """Load the checkpoint's weights, optimizer states and this rank's generators; its progress."""
    vae.load_state_dict(checkpoint.model_state)
    optimizer.load_state_dict(dict(dense=checkpoint.optimizer_state, sparse=checkpoint.local_optimizer_state))
    if checkpoint.world_size != world.size and world.is_main:
        log(
            f"notice: this run was trained by {checkpoint.world_size} process(es) and resumes with {world.size}: the "
            "epoch's order and position carry over exactly, but the ranks' binarization and noise draws are no "
            "longer those of an uninterrupted run, so the result is not bit-identical to one"
        )
    states = checkpoint.rank_rng(world.rank)
    if states is None:  # a rank the run did not have before
        pyro.set_rng_seed(rank_seed(seed, world.rank))
    else:
        set_rng_states(states)
    return checkpoint.progress
