"""Whether a step's loss and gradients are finite: the test every training step makes (eagerly after the
backward, or inside a compiled step's graph) before the optimizer moves."""

from __future__ import annotations

import torch


def all_finite(loss: torch.Tensor, gradients: list[torch.Tensor | None]) -> torch.Tensor:
    """isfinite(L) and isfinite(||(g_1, ..., g_n)||_2), as a bool tensor on the device (no host read); a
    parameter with no gradient (None) is left out, and a sparse gradient (the local guide's table) counts by its
    stored values (PyTorch 2.11 has no norm of a sparse tensor)."""
    present = [g._values() if g.is_sparse else g for g in gradients if g is not None]
    return torch.isfinite(loss) & torch.isfinite(torch.nn.utils.get_total_norm(present))
