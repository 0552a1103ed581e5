"""What a checkpoint must hold to continue a run exactly, and the rules for resuming one.

A run can be stopped between any two steps (Ctrl-C) or at an epoch's end (the periodic checkpoint);
either way the checkpoint holds every random generator's state and, mid-epoch, the epoch's permutation
and position, so the resumed run draws exactly the numbers the uninterrupted one would have drawn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from pyro_vae.core.model import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.training import checkpoints

# Settings that may change when a run is resumed; every other one must match the checkpoint's.
SAFE_ON_RESUME = (
    "epochs",
    "threads",
    "data_dir",
    "checkpoint_every",
    "on_nonfinite",
    "eval_samples",
    "eval_every",
    "eval_images",
    "validate_every_step",
    "tensorboard",
)


@dataclass
class Progress:
    """Where a run stands: finished epochs and steps and, inside an unfinished epoch, its state."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    batch: int = 0  # batches done in the epoch in progress
    permutation: torch.Tensor | None = None  # the epoch in progress's order of images
    loss_sum: float = 0.0  # sum of per-image losses over the epoch's images so far
    images: int = 0  # images counted in loss_sum
    seconds: float = 0.0  # training seconds spent in the epoch in progress
    skipped: int = 0  # non-finite steps skipped in the epoch in progress
    metrics: list[dict] = field(default_factory=list)

    def start_epoch(self, permutation: torch.Tensor) -> None:
        self.permutation, self.batch, self.loss_sum, self.images, self.seconds, self.skipped = (
            permutation,
            0,
            0.0,
            0,
            0.0,
            0,
        )

    def finish_epoch(self, record: dict) -> None:
        self.epoch += 1
        self.permutation = None
        self.batch = 0
        self.metrics.append(record)


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
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank` > 0 of a data-parallel run, for its own stream of binarization and noise
    (rank 0 goes on with the stream of `seed`, as one process does)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def rank_rng_states(checkpoint: dict, rank: int) -> dict | None:
    """Rank `rank`'s generator states in `checkpoint`, or None if the run had no such rank."""
    states = [checkpoint["rng"], *checkpoint.get("rng_other_ranks", [])]
    return states[rank] if rank < len(states) else None


def load_run_checkpoint(run_dir: Path, use: str = "--resume") -> dict:
    """The checked checkpoint of run folder `run_dir` (`checkpoints.load`), or a message saying why there is
    none to `use`."""
    path = Path(run_dir) / "checkpoint.pt"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{use} {run_dir}: no such folder")
    if not path.is_file():
        raise ConfigError(
            f"{use} {run_dir}: no checkpoint.pt there (the run stopped before its first checkpoint); "
            "start the run again"
        )
    return checkpoints.load(path)


def flatten(config_dict: dict) -> dict:
    """A TrainConfig as a dict with the model's fields beside the training ones (the CLI's names)."""
    return {**{k: v for k, v in config_dict.items() if k != "model"}, **config_dict["model"]}


def resumed_config(checkpoint: dict, given: dict, config_type: type):
    """The checkpoint's configuration with the settings the user gave again; any that differ from the
    run's and are not in SAFE_ON_RESUME stop the resume with their names and both values."""
    stored = flatten(checkpoint["config"])
    model_names = {f.name for f in fields(ModelConfig)}
    differing = []
    for name, value in given.items():
        old = stored.get(name)
        same = list(value) == list(old) if isinstance(value, (list, tuple)) else value == old
        if not same and name not in SAFE_ON_RESUME:
            differing.append(f"{_flag(name)} (run: {old!r}, given: {value!r})")
    if differing:
        raise ConfigError(
            "cannot resume with settings that differ from the run's: "
            + "; ".join(differing)
            + f". Drop those flags, or start a new run; only {', '.join(map(_flag, SAFE_ON_RESUME))} may change on resume"
        )
    merged = {**stored, **{k: v for k, v in given.items() if k in SAFE_ON_RESUME}}
    model = ModelConfig(**{k: v for k, v in merged.items() if k in model_names})
    return config_type(model=model, **{k: v for k, v in merged.items() if k not in model_names})


def _flag(name: str) -> str:
    """The command-line flag of a setting."""
    return "--binarize" if name == "binarization" else "--" + name.replace("_", "-")


def progress_from(checkpoint: dict) -> Progress:
    names = {f.name for f in fields(Progress)}
    return Progress(**{k: v for k, v in checkpoint["progress"].items() if k in names})
