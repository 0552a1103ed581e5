"""Progress: where a run stands (finished epochs and steps, and inside an unfinished epoch its order of
images, position and running sums), kept by the live run and written into its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
