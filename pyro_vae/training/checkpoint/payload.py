"""Checkpoint: what a checkpoint holds to continue a run exactly, defined once, with its `to_dict` (the
file's payload) and `from_dict` (once `validation.check` finds nothing wrong in a payload).

A run can be stopped between any two steps (Ctrl-C) or at an epoch's end (the periodic checkpoint);
either way the checkpoint holds every random generator's state and, mid-epoch, the epoch's permutation and
position (its `Progress`), so the resumed run draws exactly the numbers the uninterrupted one would have drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pyro_vae.core.parts import Parts
from pyro_vae.training.checkpoint.validation import check
from pyro_vae.training.progress import Progress


@dataclass
class Checkpoint:
    """Everything that continues a run exactly: its config (as a dict), the model's and the optimizers'
    states, every rank's generator states, and its progress."""

    config: dict
    model_state: dict
    optimizer_state: dict
    rng: dict  # rank 0's generator states (generators.rng_states)
    rng_other_ranks: list
    world_size: int
    progress: Progress
    local_optimizer_state: dict | None = None  # the local guide's SparseAdam

    def to_dict(self) -> dict:
        """The checkpoint's payload: plain containers and tensors (it loads with weights_only), epoch and
        step repeated at the top level as format 1 and 2 files have them."""
        payload = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "progress"}
        if payload["local_optimizer_state"] is None:
            del payload["local_optimizer_state"]
        return {**payload, "progress": asdict(self.progress), "epoch": self.progress.epoch, "step": self.progress.step}

    @classmethod
    def from_dict(cls, payload: object, path: Path, parts: Parts = Parts()) -> Checkpoint:
        """The state a checkpoint's payload holds, once `check` finds nothing wrong in it."""
        check(payload, path, parts)
        names = {f.name for f in fields(Progress)}
        progress = Progress(**{k: v for k, v in payload["progress"].items() if k in names})
        kept = {f.name: payload.get(f.name) for f in fields(cls) if f.name != "progress"}
        return cls(**kept, progress=progress)

    def rank_rng(self, rank: int) -> dict | None:
        """Rank `rank`'s generator states, or None if the run had no such rank."""
        states = [self.rng, *self.rng_other_ranks]
        return states[rank] if rank < len(states) else None
