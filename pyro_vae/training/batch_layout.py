"""An epoch's batches, cut from its permutation of the training images: in order, `batch_size` at a time; or,
with `--labelled-batches`, as Pyro's semi-supervised VAE tutorial steps them (`examples/vae/ss_vae_M2.py`):
the labelled images in batches of their own, batch i of the epoch labelled when

    i mod P = 1  (P = max(n // L, 2): n images, L of them labelled)  and labelled batches are left,

every other batch from the unlabelled images (the last of each kind may be smaller). Both follow from the
permutation alone, so a resume inside an epoch takes up the same batches.
"""

from __future__ import annotations

import math

import torch


def epoch_batches(permutation: torch.Tensor, batch_size: int, labelled: torch.Tensor | None) -> list[torch.Tensor]:
    """The epoch's batches of rows, in order; `labelled` (bool per training image) sets the labelled apart."""
    if labelled is None:
        return list(permutation.split(batch_size))
    known = labelled[permutation]
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


def batches_per_epoch(images: int, batch_size: int, labelled: int | None = None) -> int:
    """How many batches `epoch_batches` cuts from `images` images (`labelled` of them set apart)."""
    if labelled is None:
        return math.ceil(images / batch_size)
    return math.ceil(labelled / batch_size) + math.ceil((images - labelled) / batch_size)
