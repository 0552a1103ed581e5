"""One SVI step, and one epoch of them, on this rank's share of every batch.

    step   x -> loss module -> backward (DDP averages the gradients over ranks) -> Adam step
    epoch  the epoch's permutation -> global batches -> this rank's share -> steps -> running sums

The step never waits for the device: whether its loss and gradients are finite stays a flag on the
device, which fused Adam reads to skip the update by itself (the mechanism mixed-precision scaling uses),
and the epoch's sums stay on the device too. The host reads them every CHECK_EVERY steps and at the
epoch's end; a non-finite step then stops the run (`--on-nonfinite stop`, naming the first bad step)
before anything is checkpointed, or is counted as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from pyro_vae import data
from pyro_vae.core.model import VAE
from pyro_vae.training.build import Run

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
        state, device = run.state, run.device
        own = run.world.is_main
        return cls(
            loss_sum=torch.tensor(state.loss_sum if own else 0.0, dtype=torch.float64, device=device),
            images=torch.tensor(state.images if own else 0, device=device),
            skipped=torch.tensor(state.skipped if own else 0, device=device),
            first_bad_step=torch.zeros((), dtype=torch.int64, device=device),
        )

    def add(self, loss: torch.Tensor, finite: torch.Tensor, images: int, step: int) -> None:
        self.loss_sum += torch.where(finite, loss * images, 0.0)
        self.images += finite * images
        self.skipped += ~finite
        self.first_bad_step = torch.where(~finite & (self.first_bad_step == 0), step, self.first_bad_step)


def svi_step(
    run: Run, x: torch.Tensor, kl_scale: float, index: torch.Tensor | None, weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on this rank's images x: loss = -ELBO(x) per image, backward, and Adam's update unless
    the loss or a gradient is not finite on some rank. `weight` = (this rank's images) * ranks / (batch's
    images), so that DDP's average of the ranks' gradients is the gradient of the whole batch's mean loss.
    Returns the loss and whether the step was finite, both on the device."""
    run.vae.zero_grad(set_to_none=True)
    loss = run.loss(x, kl_scale, index)
    (loss if weight == 1 else loss * weight).backward()
    bad = run.world.any(~all_finite(loss, run.parameters))
    run.optimizer.found_inf = bad.float()  # fused Adam skips the update where this is 1
    run.optimizer.step()
    if run.local_optimizer is not None and not bad.item():  # SparseAdam has no on-device skip
        run.local_optimizer.step()
    return loss.detach(), ~bad


def train_epoch(run: Run, interrupted: Callable[[], bool], progress: bool) -> bool:
    """The rest of the epoch in progress, from batch `state.batch` of its permutation; returns True when
    Ctrl-C stopped it early (between two steps, on every rank alike)."""
    config, state, world = run.config, run.state, run.world
    sums = EpochSums.resume(run)
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=state.batch,
        desc=f"epoch {state.epoch + 1}/{config.epochs}",
        leave=False,
        disable=not (progress and world.is_main),
    )
    stopped = False
    for batch in state.permutation.split(config.batch_size)[state.batch :]:
        own = world.shard(batch)
        rows = own if len(own) else batch[:1]  # a rank left without images steps on one, weighted 0
        x = run.dataset.train[rows]
        if run.dynamic_binarization:
            x = data.binarize(x)
        state.step += 1
        loss, finite = svi_step(
            run,
            x,
            config.kl_scale(state.step, run.steps_per_epoch),
            rows if run.vae.is_local else None,
            len(own) * world.size / len(batch),
        )
        sums.add(loss, finite, len(own), state.step)
        state.batch += 1
        bar.update()
        stopped = interrupted() if world.size == 1 or state.batch % CHECK_EVERY == 0 else False
        if stopped or state.batch % CHECK_EVERY == 0:
            settle(run, sums)
            bar.set_postfix(loss=f"{state.loss_sum / max(state.images, 1):.2f}")
        if stopped:
            break
    bar.close()
    settle(run, sums)
    return stopped


def settle(run: Run, sums: EpochSums) -> None:
    """Bring the sums over all ranks to the host, into the run's progress; with `--on-nonfinite stop`, a
    non-finite step stops the run here, before anything is checkpointed."""
    totals = run.world.sum(torch.stack([sums.loss_sum, sums.images.double(), sums.skipped.double()]))
    first_bad = int(sums.first_bad_step)
    run.state.loss_sum, run.state.images, run.state.skipped = totals[0].item(), int(totals[1]), int(totals[2])
    if first_bad and run.config.on_nonfinite == "stop":
        raise run.nonfinite(first_bad, "training")


def all_finite(loss: torch.Tensor, parameters: list[torch.Tensor]) -> torch.Tensor:
    """Whether the loss and every gradient are finite (one norm over all gradients), on the device."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return torch.isfinite(loss) & torch.isfinite(torch.nn.utils.get_total_norm(grads))


def fit_test_points(
    vae: VAE,
    loss: Callable[..., torch.Tensor],
    local_optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    rows: torch.Tensor,
    batch_size: int,
    kl_scale: float,
) -> int:
    """One pass of SVI over the local guide's test points (in a random order, `batch_size` at a time),
    with the decoder fixed: the per-point parameters of the test images get the same steps as those of
    the training images, but the decoder never learns from them. Returns how many steps were skipped
    because the loss or the gradient was not finite (SparseAdam has no on-device skip: one host check a step)."""
    table = vae.q.table.weight
    skipped = 0
    for batch in torch.randperm(x.shape[0], device=x.device).split(batch_size):
        batch_loss = loss(x[batch], kl_scale, rows[batch])
        (table.grad,) = torch.autograd.grad(batch_loss, [table])  # the decoder gets no .grad
        if all_finite(batch_loss, [table]):
            local_optimizer.step()
        else:
            skipped += 1
        table.grad = None
    return skipped
