"""The optimizer of a run: fused Adam over the networks' parameters and, for a guide with parameters per
data point (the local guide), SparseAdam over its table, as one object with one learning-rate setter and
one skip on non-finite steps."""

from __future__ import annotations

import torch
from torch import nn


class SVIOptimizer:
    """Adam over `dense` parameters (fused: the fastest form, docs/PERFORMANCE.md; it skips a step on the
    device) and, if given, SparseAdam over the `sparse` table: a lazy Adam that moves only the rows in the
    batch, where a dense Adam would go on moving every other row by its stale momentum. SparseAdam has no
    on-device skip, so a run with a table reads the finite flag on the host once a step."""

    def __init__(
        self,
        dense: list[nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        sparse: nn.Parameter | None = None,
        sparse_lr: float = 0.05,
    ):
        self.dense = torch.optim.Adam(dense, lr=lr, fused=True, betas=betas, eps=eps)
        self.sparse = None if sparse is None else torch.optim.SparseAdam([sparse], lr=sparse_lr)

    @property
    def param_groups(self) -> list[dict]:
        return self.dense.param_groups + ([] if self.sparse is None else self.sparse.param_groups)

    def set_learning_rates(self, lr: float, sparse_lr: float) -> None:
        for group in self.dense.param_groups:
            group["lr"] = lr
        if self.sparse is not None:
            for group in self.sparse.param_groups:
                group["lr"] = sparse_lr

    def step_unless(self, bad: torch.Tensor) -> None:
        """Both updates, unless `bad` (a bool tensor on the device)."""
        self.dense.found_inf = bad.float()  # fused Adam skips the update where this is 1
        self.dense.step()
        if self.sparse is not None and not bad.item():
            self.sparse.step()

    def state_dict(self) -> dict:
        """Both optimizers' states: {"dense": Adam's, "sparse": SparseAdam's or None}."""
        return dict(dense=self.dense.state_dict(), sparse=None if self.sparse is None else self.sparse.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.dense.load_state_dict(state["dense"])
        if self.sparse is not None:
            self.sparse.load_state_dict(state["sparse"])
