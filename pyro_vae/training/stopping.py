"""Early stopping on the validation loss (`--patience N`): a run ends once N epochs in a row bring no lower
validation loss than its best epoch's, and `best.pt` holds that epoch's checkpoint. Both are read from the
epoch records alone, so a resumed run stops, and rewrites best.pt, exactly where it would have without the
interruption:

    best epoch b = argmin_e validation_loss(e)   (the first of equals)
    stop after epoch e  iff  e - b >= N
"""

from __future__ import annotations

BEST_FILE = "best.pt"


def best_record(metrics: list[dict]) -> dict | None:
    """The epoch record of lowest validation loss (the first of equals); None without a validation split."""
    with_validation = [m for m in metrics if "validation_loss" in m]
    return min(with_validation, key=lambda m: m["validation_loss"]) if with_validation else None


def is_best(metrics: list[dict]) -> bool:
    """Whether the last epoch's validation loss is lower than every earlier epoch's."""
    best = best_record(metrics)
    return best is not None and best is metrics[-1]


def stopped_early(metrics: list[dict], patience: int) -> int | None:
    """The best epoch, where the `patience` epochs since it brought no lower validation loss (the run ends
    there); else None (and always None with patience 0)."""
    best = best_record(metrics) if patience else None
    if best is None or metrics[-1]["epoch"] - best["epoch"] < patience:
        return None
    return best["epoch"]
