"""One epoch of SVI steps (`step.svi_step`) on this rank's share of every batch.

    epoch  the epoch's permutation -> global batches -> this rank's share -> steps -> running sums

The epoch's sums stay on the device, as the step's finite flags do. The host reads them every CHECK_EVERY
steps and at the epoch's end; a non-finite step then stops the run (`--on-nonfinite stop`, naming the first
bad step) before anything is checkpointed, or is counted as skipped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from pyro_vae import data
from pyro_vae.training.batch_layout import epoch_batches
from pyro_vae.training.run import Run
from pyro_vae.training.step import Batch, LossFunction, svi_step

CHECK_EVERY = 50  # steps between the host's reads of the device-side flags and sums


@dataclass
class EpochSums:
    """Running sums of this rank's steps in the epoch in progress, kept on the device."""

    loss_sum: torch.Tensor  # per-image losses of the finite steps' images, float64
    images: torch.Tensor  # images of the finite steps
    skipped: torch.Tensor  # non-finite steps
    first_bad_step: torch.Tensor  # the number of the first non-finite step, 0 while there is none

    @classmethod
    def resume(cls, run: Run) -> "EpochSums":
        """The sums so far: the checkpoint's (over all ranks) on rank 0, zero on the others."""
        progress, device = run.progress, run.device
        own = run.world.is_main
        return cls(
            loss_sum=torch.tensor(progress.loss_sum if own else 0.0, dtype=torch.float64, device=device),
            images=torch.tensor(progress.images if own else 0, device=device),
            skipped=torch.tensor(progress.skipped if own else 0, device=device),
            first_bad_step=torch.zeros((), dtype=torch.int64, device=device),
        )

    def add(self, loss: torch.Tensor, finite: torch.Tensor, images: int, step: int) -> None:
        self.loss_sum += torch.where(finite, loss * images, 0.0)
        self.images += finite * images
        self.skipped += ~finite
        self.first_bad_step = torch.where(~finite & (self.first_bad_step == 0), step, self.first_bad_step)


def train_epoch(run: Run, interrupted: Callable[[], bool], show_bar: bool) -> bool:
    """The rest of the epoch in progress, from batch `progress.batch` of its permutation; returns True when
    Ctrl-C stopped it early (between two steps, on every rank alike)."""
    config, progress, world = run.config, run.progress, run.world
    sums = EpochSums.resume(run)
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=progress.batch,
        desc=f"epoch {progress.epoch + 1}/{config.epochs}",
        leave=False,
        disable=not (show_bar and world.is_main and sys.stderr.isatty()),  # in a file: the epoch lines
    )
    stopped = False
    layout = epoch_batches(progress.permutation, config.batch_size, run.labelled, config.labelled_per_batch)
    batches = layout[progress.batch :]
    shares = [world.shard(batch) for batch in batches]
    rows = [own if len(own) else batch[:1] for own, batch in zip(shares, batches)]  # none: one image, weighted 0
    draw = run.binarization_draw
    for batch, own, own_rows, x in zip(batches, shares, rows, run.dataset.train_batches(rows)):
        progress.step += 1
        loss, finite = svi_step(
            run.objective.loss,
            run.objective.optimizer,
            training_batch(run.dataset, own_rows, x, draw, run.vae.takes_labels),
            run.schedule.kl_weight(progress.step),
            weight=len(own) * world.size / len(batch),
            world=world,
        )
        sums.add(loss, finite, len(own), progress.step)
        progress.batch += 1
        bar.update()
        stopped = interrupted() if world.size == 1 or progress.batch % CHECK_EVERY == 0 else False
        if stopped or progress.batch % CHECK_EVERY == 0:
            settle(run, sums)
            bar.set_postfix(loss=f"{progress.loss_sum / max(progress.images, 1):.2f}")
        if stopped:
            break
    bar.close()
    settle(run, sums)
    return stopped


def training_batch(
    dataset: data.Dataset,
    rows: torch.Tensor,
    images: torch.Tensor,
    draw: Callable[[torch.Tensor], torch.Tensor] | None,
    with_labels: bool,
) -> Batch:
    """The training images `rows` (read: `images`) as a step takes them: float32 pixels (8-bit ones divided
    by 255 here, on the device), binarized afresh by `draw` if given, with their row numbers (a guide with
    parameters per image) or, `with_labels`, their labels."""
    x = data.pixels(images)
    if draw is not None:
        x = draw(x)
    return Batch(
        x,
        None if dataset.train_rows is None else dataset.train_rows[rows],
        dataset.train_labels[rows] if with_labels else None,
    )


def settle(run: Run, sums: EpochSums) -> None:
    """Bring the sums over all ranks to the host, into the run's progress; with `--on-nonfinite stop`, a
    non-finite step stops the run here, before anything is checkpointed."""
    totals = run.world.sum(torch.stack([sums.loss_sum, sums.images.double(), sums.skipped.double()]))
    first_bad = int(sums.first_bad_step)
    run.progress.loss_sum, run.progress.images, run.progress.skipped = totals[0].item(), int(totals[1]), int(totals[2])
    if first_bad and run.config.on_nonfinite == "stop":
        raise run.nonfinite(first_bad, "training")


def fit_test_points(
    loss: LossFunction,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    rows: torch.Tensor,
    batch_size: int,
    kl_weight: float,
) -> int:
    """One pass of SVI over the local guide's test points (in a random order, `batch_size` at a time),
    with the decoder fixed: the per-point parameters of the test images (the `optimizer`'s) get the same
    steps as those of the training images, but the decoder never learns from them (nor gets a .grad).
    Returns how many steps were skipped because the loss or the gradient was not finite."""
    skipped = torch.zeros((), dtype=torch.int64, device=x.device)
    for batch in torch.randperm(x.shape[0], device=x.device).split(batch_size):
        _, finite = svi_step(loss, optimizer, Batch(x[batch], rows[batch]), kl_weight, only_optimized=True)
        skipped += ~finite
    return int(skipped)
