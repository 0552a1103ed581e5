"""An epoch's batches, cut from its permutation of the training images: in order, `batch_size` at a time; or
with the labelled images (`labels_kept`) set apart, in one of two ways:

- `--labelled-batches`, as Pyro's semi-supervised VAE tutorial steps them (`examples/vae/ss_vae_M2.py`):
  the labelled images in batches of their own, batch i of the epoch labelled when

      i mod P = 1  (P = max(n // L, 2): n images, L of them labelled)  and labelled batches are left,

  every other batch from the unlabelled images (the last of each kind may be smaller);
- `--labelled-per-batch K`, as Kingma et al.'s code trains M2: every batch is `batch_size` unlabelled images
  and K labelled ones, taken in turn from the epoch's order of the labelled images (again from its start
  when they run out), so that the labels steer every step; an epoch is one pass over the unlabelled images.

Every layout follows from the permutation alone, so a resume inside an epoch takes up the same batches.
"""

from __future__ import annotations

import math

import torch


def epoch_batches(
    permutation: torch.Tensor, batch_size: int, labelled: torch.Tensor | None, per_batch: int = 0
) -> list[torch.Tensor]:
    """The epoch's batches of rows, in order; `labelled` (bool per training image) sets the labelled apart, in
    batches of their own, or `per_batch` of them in every batch."""
    if labelled is None:
        return list(permutation.split(batch_size))
    known = labelled[permutation]
    if per_batch:
        with_labels, without = permutation[known], cut(permutation[~known], batch_size)
        turns = torch.arange(len(without) * per_batch, device=permutation.device) % len(with_labels)
        return [torch.cat([rows, with_labels[turn]]) for rows, turn in zip(without, turns.split(per_batch))]
    with_labels, without = cut(permutation[known], batch_size), cut(permutation[~known], batch_size)
    period = max(permutation.shape[0] // max(int(known.sum()), 1), 2)
    batches = []
    for i in range(len(with_labels) + len(without)):
        labelled_turn = (i % period == 1 or not without) and with_labels
        batches.append((with_labels if labelled_turn else without).pop(0))
    return batches


def cut(rows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """`rows` in batches of `batch_size` (the last may be smaller; none for no rows)."""
    return list(rows.split(batch_size)) if len(rows) else []


def batches_per_epoch(images: int, batch_size: int, labelled: int | None = None, per_batch: int = 0) -> int:
    """How many batches `epoch_batches` cuts from `images` images (`labelled` of them set apart)."""
    if labelled is None:
        return math.ceil(images / batch_size)
    unlabelled = math.ceil((images - labelled) / batch_size)
    return unlabelled if per_batch else math.ceil(labelled / batch_size) + unlabelled
