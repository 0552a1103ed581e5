"""Whether a step's loss and gradients are finite: the test every training step makes (eagerly after the
backward, or inside a compiled step's graph) before the optimizer moves."""

from __future__ import annotations

import torch


def all_finite(loss: torch.Tensor, gradients: list[torch.Tensor | None]) -> torch.Tensor:
    """isfinite(L) and isfinite(||(g_1, ..., g_n)||_2), as a bool tensor on the device (no host read); a
    parameter with no gradient (None) is left out."""
    present = [gradient for gradient in gradients if gradient is not None]
    return torch.isfinite(loss) & torch.isfinite(torch.nn.utils.get_total_norm(present))
