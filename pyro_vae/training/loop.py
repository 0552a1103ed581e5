"""Training, as parts a reader can name, each in one place:

    build a run    config (or checkpoint) -> data, VAE, objective, progress, folder     build.build_run
    step, epoch    x -> loss -> backward -> Adam; this rank's share of every batch      epoch.train_epoch
    end of epoch   evaluate (sharded over ranks) -> record -> checkpoint (rank 0 writes)    epoch_end.end_of_epoch
    end of run     figures, summary                                                     end_of_run

`train` runs them in that order, in one process or on every rank of a `torchrun` job (data parallel:
DDP averages the gradients; see `distributed` and `objective`). A step (`step.svi_step`) is what
`pyro.infer.SVI.step` does (the estimator's differentiable loss, backward, an optimizer step), with a torch
optimizer over the VAE's own parameters instead of Pyro's global param store, so runs never share state.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch.distributed as dist
from torch import nn

from pyro_vae import data as data_module
from pyro_vae import memory
from pyro_vae.core.parts import PART_NAMES, Parts
from pyro_vae.core.program import Program
from pyro_vae.core.programs import program_parts
from pyro_vae.data import IMAGE_SHAPE
from pyro_vae.distributed import World
from pyro_vae.errors import ConfigError, ConfigTypeError
from pyro_vae.training import stopping
from pyro_vae.training.build import build_run
from pyro_vae.training.checkpoint.payload import Checkpoint
from pyro_vae.training.checkpoint.resume import load_run_checkpoint, resumed_config
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.epoch import fit_test_points, train_epoch
from pyro_vae.training.epoch_end import end_of_epoch
from pyro_vae.training.inputs import resolve_device
from pyro_vae.training.report import records
from pyro_vae.training.run import Run, TrainingError
from pyro_vae.training.signals import Abandoned, Interrupted, agreed_flag, interrupt_flag, stop_message
from pyro_vae.training.trained_run import TrainedRun, load_run

__all__ = ["Abandoned", "Interrupted", "resume", "train"]


IMAGE_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


def say(line: str) -> None:
    """A line for the person watching, on stderr; where stderr cannot be written (a full disk, a closed pipe)
    training goes on without it: every line's numbers are in the run folder too."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def train(
    config: TrainConfig,
    progress: bool = True,
    log: Callable[[str], None] = say,
    checkpoint: Checkpoint | None = None,
    *,
    data: data_module.Dataset | tuple | None = None,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    guide: object = None,
    model: object = None,
) -> TrainedRun:
    """Train a VAE with SVI as `config` says and write the run folder; returns the trained run (its model
    in eval mode, config, metrics and folder; `load_run` gives the same back from the folder later).

    Your own parts: `data` = (train, test) images as tensors, arrays or torch Datasets of any image shape
    (`data.from_arrays`), in place of the config's dataset; an `encoder` (x -> (loc, scale)) and a
    `decoder` (z -> logits) of any architecture, or a whole `guide` (`core.guides.Guide`), in place of the
    built-in networks. Your own Pyro program: `model` and its `guide` (`core.program.Program`; docs/own-
    program.md). A run with such parts needs them again to resume or load (`resume`, `load_run`).

    With a `checkpoint` (of the run in folder `config.out`, see `resume.load_run_checkpoint`), continue
    that run exactly as if it had never stopped (a finished run is left as it is). Under `torchrun` every
    rank calls this; rank 0 writes the folder (`summary.json` last: without it, a run is unfinished)."""
    if not isinstance(config, TrainConfig):
        raise ConfigTypeError(f"train() needs a TrainConfig, got {type(config).__name__} {config!r:.60}")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise ConfigTypeError(
            f"checkpoint must be a Checkpoint (resume.load_run_checkpoint(folder)), got {type(checkpoint).__name__}"
        )
    resolve_device(config.cuda)
    config, images, parts = given_to_run(config, data, Parts(encoder, decoder, guide, model))
    if finished_already(config, checkpoint):
        log(f"{config.out} is a finished run {finished_text(config, checkpoint)}")
        return load_run(config.out, "cuda" if config.cuda else "cpu", config.data_dir, data=images, **parts.given())
    world = World.from_environment(config.cuda)
    try:
        run = build_run(config, world, checkpoint, log if world.is_main else _quiet, parts, images)
        try:
            out = _train(run, progress, log if world.is_main else _quiet, resumed=checkpoint is not None)
        except BaseException as error:  # the folder's lock given back, whatever ended the run
            run.folder.close("KILLED" if isinstance(error, (Interrupted, KeyboardInterrupt)) else "FAILED")
            raise
        run.folder.close()
    except RuntimeError as error:
        world.close(finished=False)
        raise lost_rank(error, world, config.out) if is_distributed_failure(error, world) else error
    except BaseException:
        world.close(finished=False)
        raise
    world.close(finished=True)
    return out


def resume(
    run_dir: str | Path,
    epochs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = say,
    **parts: object,
) -> TrainedRun:
    """Continue the run in `run_dir` exactly where it stopped (to `epochs`, if given, else its own), as
    `svi_train.py --resume` does; a run trained on your own `data`, `encoder`, `decoder`, `guide` or
    `model` needs them again, as keyword arguments."""
    checkpoint = load_run_checkpoint(Path(run_dir), use="resume", parts=Parts(*(parts.get(n) for n in PART_NAMES)))
    config = resumed_config(checkpoint, {} if epochs is None else {"epochs": epochs})
    return train(replace(config, out=str(run_dir)), progress, log, checkpoint, **parts)


def given_to_run(
    config: TrainConfig, data: data_module.Dataset | tuple | None, given: Parts
) -> tuple[TrainConfig, data_module.Dataset | None, Parts]:
    """The user's `data` as a Dataset, the parts that train (`run_parts`), and the config saying so from the
    start: a program's description, the user's dataset (the data's binarization and the checks read them)."""
    images = user_images(data)
    parts = run_parts(config, images, given)
    if parts.is_program:
        config = replace(config, model=replace(config.model, user_parts=parts.description()))
    if images is not None:
        config = replace(config, dataset=data_module.USER_DATA, data_dir=None)
    return config, images, parts


def run_parts(config: TrainConfig, images: data_module.Dataset | None, given: Parts) -> Parts:
    """What the run trains: the user's `given` parts, or the registered program `config.program` built for the
    images' pixels (the user's, else every built-in dataset's 28 x 28)."""
    pixels = images.x_dim if images is not None else IMAGE_PIXELS
    return program_parts(config.program, given, pixels, config.seed, config.program_options)


def finished_already(config: TrainConfig, checkpoint: Checkpoint | None) -> bool:
    """Whether the run to resume has trained its epochs (or stopped early) and written its summary: nothing
    left to do."""
    if checkpoint is None or not (Path(config.out) / "summary.json").exists():
        return False
    progress = checkpoint.progress
    return progress.epoch >= config.epochs or stopping.stopped_early(progress.metrics, config.patience) is not None


def finished_text(config: TrainConfig, checkpoint: Checkpoint) -> str:
    """How a finished run ended, and what would train it further."""
    progress = checkpoint.progress
    best = stopping.stopped_early(progress.metrics, config.patience)
    if progress.epoch < config.epochs and best is not None:
        return (
            f"(stopped early after epoch {progress.epoch}, {config.patience} epochs without a validation gain "
            f"since epoch {best}); nothing to do, nothing changed. A larger patience trains it further"
        )
    return (
        f"({progress.epoch} of {config.epochs} epochs); nothing to do, nothing changed. "
        "Give it more epochs to train it further"
    )


def user_images(given: data_module.Dataset | tuple | None) -> data_module.Dataset | None:
    """The user's images as a Dataset: as given, or from a (train, test) pair of tensors, arrays or Datasets."""
    if given is None or isinstance(given, data_module.Dataset):
        return given
    if not (isinstance(given, (tuple, list)) and len(given) == 2):
        raise ConfigError(f"data must be a (train, test) pair of images, got a {type(given).__name__}")
    return data_module.from_arrays(*given)


def _train(run: Run, show_bars: bool, log: Callable[[str], None], resumed: bool) -> TrainedRun:
    progress, config = run.progress, run.config
    started = time.perf_counter()
    with interrupt_flag(under_torchrun=run.world.size > 1) as flag:
        log(start_line(run, resumed))  # once a stop signal is caught: a job may be stopped from this line on
        interrupted = agreed_flag(flag, run)
        while run.more_epochs:
            run.start_epoch()
            tic = time.perf_counter()
            stopped = train_epoch(run, interrupted, show_bars)
            if stopped and progress.batch < run.steps_per_epoch:
                progress.seconds += time.perf_counter() - tic
                run.folder.save_checkpoint(run.checkpoint())
                raise stop_message(run, f"at step {progress.step} (epoch {progress.epoch + 1})", flag[0])
            if run.dataset.test_rows is not None:  # per-image parameters: the test images' get their steps too
                skipped = fit_test_points(
                    run.objective.loss,
                    run.objective.optimizer.sparse,
                    run.dataset.test,
                    run.dataset.test_rows,
                    config.batch_size,
                    run.schedule.kl_weight(progress.step),
                )
                if skipped and config.on_nonfinite == "stop":
                    raise run.nonfinite(progress.step, "the test points' pass")
                progress.skipped += skipped
            progress.seconds += time.perf_counter() - tic
            if end_of_epoch(run, interrupted, log, show_bars) and run.more_epochs:
                raise stop_message(run, f"after epoch {progress.epoch}", flag[0])
    return end_of_run(run, started, log)


def end_of_run(run: Run, started: float, log: Callable[[str], None]) -> TrainedRun:
    """The figures and summary.json (written last: a folder with it holds a finished run); the trained
    run, handed back to Python callers."""
    metrics, patience = run.progress.metrics, run.config.patience
    run.folder.write_figures(run.vae, run.dataset, metrics)
    summary = records.summary(
        metrics, time.perf_counter() - started, run.device, run.world.size, run.config.resolved_binarization
    )
    best = stopping.stopped_early(metrics, patience)
    if best is not None:
        summary["stopped_early"] = dict(after_epoch=metrics[-1]["epoch"], best_epoch=best, patience=patience)
        log(
            f"stopped early: no lower validation loss in the {patience} epochs since epoch {best}; "
            f"{run.folder.path / stopping.BEST_FILE} holds its weights (evaluate.py --best)"
        )
    run.folder.write_summary(summary)
    density = (
        ""
        if run.config.model.likelihood == "bernoulli"
        else (
            f" (the {run.config.model.likelihood} likelihood is a density over grey levels, not a probability, so "
            "log p(x|z) can exceed 0 and this loss can be negative)"
        )
    )
    what = (
        "test loss -log p(x, mu(x)) (the point-mass guide's ELBO form, log q = 0: no bound on log p(x))"
        if run.vae.is_point_mass
        else "test negative ELBO"
    )
    if isinstance(run.vae, Program):
        density = ""  # the program's own likelihood: nothing to say of it here
    log(f"done: {what} {metrics[-1]['test_loss']:.3f} nats/image{density}; outputs in {run.folder.path}")
    return TrainedRun(run.folder.path, run.config, run.vae.eval(), metrics, finished=True, dataset=run.dataset)


def start_line(run: Run, resumed: bool) -> str:
    progress, dataset = run.progress, run.dataset
    verb = f"resuming at epoch {progress.epoch + 1}, step {progress.step}" if resumed else "training"
    return (
        f"{verb} on {dataset.name} ({dataset.train.shape[0]} train / {dataset.test.shape[0]} test images"
        + (", the local guide's fixed subsets" if run.dataset.test_rows is not None else "")
        + (", training images held as uint8" if dataset.eight_bit else "")
        + (streaming_text(dataset.train) if dataset.streamed else "")
        + f", binarization {run.config.resolved_binarization}) on {run.device}, {threads_text(run.config.threads)}"
        + (f", {run.world.size} processes" if run.world.size > 1 else "")
        + f"; writing {run.folder.path}"
    )


def streaming_text(train: data_module.StreamedImages) -> str:
    """What the start line says of a streamed training split: why, and how it is read."""
    needed = memory.gigabytes(train.shape[0] * train.shape[1] * 4)
    return (
        f", training images streamed from your Dataset by {train.workers} worker{'s' if train.workers != 1 else ''} "
        f"(as float32 they need {needed}, more than the {memory.gigabytes(memory.available_bytes())} available)"
    )


def threads_text(threads: int) -> str:
    return f"{threads} CPU thread{'s' if threads > 1 else ''}"


def is_distributed_failure(error: RuntimeError, world: World) -> bool:
    """Whether `error` says that another process of the job stopped or cannot be reached."""
    return world.size > 1 and (isinstance(error, dist.DistError) or any(w in str(error) for w in ("gloo", "NCCL")))


def lost_rank(error: RuntimeError, world: World, out: str | None) -> TrainingError:
    return TrainingError(
        f"rank {world.rank} of {world.size} lost the other processes of the job ({str(error).splitlines()[0][:200]}); "
        "the job stops. The run folder keeps its last checkpoint: resume with the same torchrun command and "
        f"--resume {out if out is not None else 'RUN_DIR'}"
    )


def _quiet(line: str) -> None:
    """The log of the ranks other than 0."""
