"""The random generators a run draws from (torch on CPU and CUDA, NumPy, Python; Pyro draws from these
too): their states, to checkpoint and restore, and each rank's seed."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_states() -> dict:
    """The state of every generator a run draws from: torch (CPU and CUDA), NumPy and Python.
    (Pyro draws from these too.) Only tensors and plain containers, so it loads with weights_only."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return dict(
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        numpy=[kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        python=list(random.getstate()),
    )


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():  # a GPU run resumed on the CPU leaves them
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])
    np.random.set_state(_numpy_state(states["numpy"]))
    random.setstate(_python_state(states["python"]))


def restorable(states: dict) -> str | None:
    """None if every CPU generator state restores (tried on scratch generators, the process's untouched),
    else the name of the first that does not."""
    for name, restore in (
        ("torch", lambda: torch.Generator().set_state(states["torch"])),
        ("numpy", lambda: np.random.RandomState().set_state(_numpy_state(states["numpy"]))),
        ("python", lambda: random.Random().setstate(_python_state(states["python"]))),
    ):
        try:
            restore()
        except (TypeError, ValueError, RuntimeError, OverflowError):
            return name
    return None


def _numpy_state(saved: list) -> tuple:
    kind, keys, pos, has_gauss, cached = saved
    return kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached


def _python_state(saved: list) -> tuple:
    version, internal, gauss = saved
    return version, tuple(internal), gauss


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank` > 0 of a data-parallel run, for its own stream of binarization and noise
    (rank 0 goes on with the stream of `seed`, as one process does)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
