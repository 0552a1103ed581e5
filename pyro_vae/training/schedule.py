"""The schedules of a run, in one place: the learning rate by epoch and the KL weight by step."""

from __future__ import annotations

from dataclasses import dataclass

LR_SCHEDULES = ("geometric", "paper")
PAPER_EPOCHS = sum(3**i for i in range(8))  # 3,280: Burda et al.'s eight stages of 3^i epochs


@dataclass(frozen=True)
class Schedule:
    """What every loop reads instead of recomputing it from a config: lr(epoch), local_lr(epoch) and
    kl_weight(step) of one run with `steps_per_epoch` steps an epoch (`TrainConfig.schedule` makes it)."""

    lr: float
    epochs: int
    steps_per_epoch: int
    lr_final: float | None = None
    lr_schedule: str = "geometric"
    beta: float = 1.0
    kl_warmup: float = 0.0  # epochs
    local_lr: float = 0.05

    def lr_factor(self, epoch: int) -> float:
        """The learning rates' factor for epoch (0-based); it multiplies lr and the local guide's local_lr alike.

        geometric: 1, or (lr_final / lr)^(epoch / (epochs - 1)) with --lr-final.
        paper: 10^(-i/7) in stage i = 0..7 of Burda et al. (2016), which lasts 3^i of its 3,280 epochs; the
        stages are stretched to this run's `epochs` (epochs = 3,280 gives the paper's own).
        """
        if self.lr_schedule == "paper":
            position = epoch * PAPER_EPOCHS / self.epochs  # where this epoch starts on the paper's time axis
            stage = max(i for i in range(8) if (3**i - 1) / 2 <= position)  # stages 0..i-1 take (3^i - 1)/2 epochs
            return 10 ** (-stage / 7)
        if self.lr_final is None or self.epochs == 1:
            return 1.0
        return (self.lr_final / self.lr) ** (epoch / (self.epochs - 1))

    def learning_rate(self, epoch: int) -> float:
        """lr * lr_factor(epoch): constant, geometric to lr_final at the last epoch, or the paper's stages."""
        return self.lr * self.lr_factor(epoch)

    def local_learning_rate(self, epoch: int) -> float:
        """The local guide's per-point learning rate, on the same schedule: local_lr * lr_factor(epoch)."""
        return self.local_lr * self.lr_factor(epoch)

    def kl_weight(self, step: int) -> float:
        """beta, ramped linearly over the first `kl_warmup` epochs: beta * min(1, step / warm-up steps)."""
        if self.kl_warmup == 0:
            return self.beta
        return self.beta * min(1.0, step / (self.kl_warmup * self.steps_per_epoch))
