"""Where a checkpoint's run stands, checked: the progress counters in range and agreeing with each other (a
true permutation, a record per epoch), Adam's count of updates against the run's steps, and the generators'
states of every rank."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import torch

from pyro_vae.settings import quoted
from pyro_vae.training.checkpoint.generators import restorable
from pyro_vae.training.checkpoint.values import CheckpointError, check_tensor, is_count
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.progress import Progress

PROGRESS = {f.name for f in fields(Progress)}  # the keys a checkpoint's progress may hold


def check_progress(checkpoint: dict, config: TrainConfig, path: Path) -> None:
    """The counters in range and agreeing with each other; the permutation a true one; a record per epoch."""
    progress = checkpoint["progress"]
    if (
        not isinstance(progress, dict)
        or not set(progress) <= PROGRESS
        or not {"epoch", "step", "metrics"} <= set(progress)
    ):
        raise CheckpointError(f"{path}: its progress is not a dict of {', '.join(sorted(PROGRESS))}")
    for name in ("epoch", "step", "batch", "images", "skipped"):
        if name in progress and not is_count(progress[name]):
            raise CheckpointError(f"{path}: progress {name} is {progress[name]!r}, not a count")
    for name, least in (("loss_sum", -math.inf), ("seconds", 0.0)):  # a density's loss can be negative
        value = progress.get(name, 0.0)
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not (math.isfinite(value) and value >= least)
        ):
            raise CheckpointError(
                f"{path}: progress {name} is {value!r}, not a finite number" + (" >= 0" if least == 0 else "")
            )
    epoch = progress["epoch"]
    if checkpoint["epoch"] != epoch or checkpoint["step"] != progress["step"] or epoch > config.epochs:
        raise CheckpointError(
            f"{path}: its progress is inconsistent (epoch {checkpoint['epoch']!r}/{epoch!r} of "
            f"{config.epochs}, step {checkpoint['step']!r}/{progress['step']!r})"
        )
    metrics = progress["metrics"]
    if (
        not isinstance(metrics, list)
        or len(metrics) != epoch
        or not all(isinstance(m, dict) for m in metrics)
        or [m.get("epoch") for m in metrics] != list(range(1, epoch + 1))
    ):
        raise CheckpointError(
            f"{path}: its progress holds {len(metrics) if isinstance(metrics, list) else 'no'} "
            f"epoch records for {epoch} finished epochs"
        )
    check_records(metrics, path)
    permutation = progress.get("permutation")
    if permutation is not None:
        if (
            not isinstance(permutation, torch.Tensor)
            or permutation.dtype != torch.int64
            or permutation.dim() != 1
            or not torch.equal(permutation.sort().values, torch.arange(len(permutation)))
        ):
            raise CheckpointError(f"{path}: progress permutation is not a permutation of the training images")
        if progress.get("batch", 0) > -(-len(permutation) // config.batch_size):
            raise CheckpointError(f"{path}: progress batch {progress['batch']} lies past the epoch's end")


RECORDED = ("train_loss", "test_loss")  # what every epoch's record holds, which the report and figures read


def check_records(metrics: list[dict], path: Path) -> None:
    """Each epoch's record holds a finite number for every key in RECORDED (and for validation_loss, where
    there is one): the figures and the summary at the run's end read them."""
    for record in metrics:
        for key in (*RECORDED, *(("validation_loss",) if "validation_loss" in record else ())):
            value = record.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise CheckpointError(
                    f"{path}: its progress's record of epoch {record['epoch']} holds {quoted(value)} for {key}, "
                    "not a finite number"
                )


def check_adam_steps(moments: dict, steps: int, path: Path) -> None:
    """Adam's own count of updates agrees with the run's progress: at most the run's steps (skipped non-finite
    steps are not updates), and moments kept once the run has stepped; else the run would resume with
    another bias correction or none, silently a different run."""
    if steps > 0 and not moments:
        raise CheckpointError(f"{path}: its optimizer_state holds no Adam moments, but the run took {steps:,} steps")
    for index, entry in moments.items():
        if float(entry["step"]) > steps:
            raise CheckpointError(
                f"{path}: optimizer_state parameter {index} counts {float(entry['step']):.6g} Adam updates, more "
                f"than the run's {steps:,} steps"
            )


def check_generators(checkpoint: dict, path: Path) -> None:
    """The generators' states have the types and sizes `resume.set_rng_states` restores."""
    world_size, others = checkpoint["world_size"], checkpoint["rng_other_ranks"]
    if not is_count(world_size) or world_size < 1 or not isinstance(others, list) or len(others) != world_size - 1:
        raise CheckpointError(f"{path}: world_size {world_size!r} and the other ranks' generator states do not agree")
    for index, states in enumerate([checkpoint["rng"], *others]):
        where = f"{path}: the generator states of rank {index}"
        if not isinstance(states, dict) or set(states) != {"torch", "cuda", "numpy", "python"}:
            raise CheckpointError(f"{where} are not torch, cuda, numpy and python states")
        check_tensor(states["torch"], torch.get_rng_state().shape, torch.uint8, f"{where}: torch")
        if not isinstance(states["cuda"], list) or not all(
            isinstance(s, torch.Tensor) and s.dtype == torch.uint8 for s in states["cuda"]
        ):
            raise CheckpointError(f"{where}: cuda is not a list of byte tensors")
        numpy_state = states["numpy"]
        if (
            not isinstance(numpy_state, list)
            or len(numpy_state) != 5
            or numpy_state[0] != "MT19937"
            or not is_count(numpy_state[2])
            or numpy_state[2] > 624
            or not isinstance(numpy_state[4], float)
        ):
            raise CheckpointError(f"{where}: numpy is not a Mersenne Twister state")
        check_tensor(numpy_state[1], (624,), torch.int64, f"{where}: numpy keys")
        if not ((numpy_state[1] >= 0) & (numpy_state[1] < 2**32)).all():
            raise CheckpointError(f"{where}: numpy keys are not 32-bit words")
        python_state = states["python"]
        if (
            not isinstance(python_state, list)
            or len(python_state) != 3
            or not isinstance(python_state[1], (tuple, list))
            or len(python_state[1]) != 625
            or not all(is_count(w) and w < 2**32 or w == 624 for w in python_state[1])
        ):
            raise CheckpointError(f"{where}: python is not a Mersenne Twister state")
        if (broken := restorable(states)) is not None:
            raise CheckpointError(f"{where}: {broken}'s state does not restore (its contents are not a generator's)")
