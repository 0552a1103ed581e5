"""The live run: everything a training run holds while it trains, on one rank (its config, data, model,
objective, progress, schedule and folder), and what it says when it cannot go on.

With several ranks, every rank builds the same model from the same seed (DDP also broadcasts rank 0's
weights), then reseeds its own generators, so that each rank draws its own binarization and noise; rank 0
keeps the single-process stream, so a one-process run is what it always was.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from pyro_vae import data
from pyro_vae.core.model import VAE
from pyro_vae.distributed import World
from pyro_vae.errors import PyroVAEError
from pyro_vae.training import stopping
from pyro_vae.training.batch_layout import batches_per_epoch
from pyro_vae.training.checkpoint.generators import rng_states
from pyro_vae.training.checkpoint.payload import Checkpoint
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.objective import Objective
from pyro_vae.training.progress import Progress
from pyro_vae.training.report.folder import RunFolder
from pyro_vae.training.schedule import Schedule


class TrainingError(PyroVAEError):
    """Training diverged (a NaN or infinite loss)."""


@dataclass
class Run:
    """Everything a training run holds while it trains, on one rank."""

    config: TrainConfig
    world: World
    dataset: data.Dataset
    vae: VAE
    objective: Objective  # the loss (ELBOLoss, compiled, inside DDP) and the optimizer
    progress: Progress
    folder: RunFolder
    schedule: Schedule = field(init=False)

    def __post_init__(self) -> None:
        self.schedule = self.config.schedule(self.steps_per_epoch)

    @property
    def device(self) -> torch.device:
        return self.dataset.train.device

    @property
    def labelled(self) -> torch.Tensor | None:
        """Where the labelled images are set apart (`labelled_batches`, `labelled_per_batch`), which training
        images have labels."""
        config = self.config
        return self.dataset.train_labels >= 0 if config.labelled_batches or config.labelled_per_batch else None

    @property
    def steps_per_epoch(self) -> int:
        labelled = None if self.labelled is None else int(self.labelled.sum())
        return batches_per_epoch(
            self.dataset.train.shape[0], self.config.batch_size, labelled, self.config.labelled_per_batch
        )

    @property
    def binarization_draw(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """How each training batch is binarized afresh: not at all (None: `static` or `none`); in one fused
        Threefry kernel where inductor compiles the step on a CPU (`data.binarize_fused`); else by
        `torch.bernoulli`'s draw (`data.binarize`)."""
        config = self.config
        if config.resolved_binarization != "dynamic":
            return None
        fused = config.compile and config.compile_backend == "inductor" and self.device.type == "cpu"
        return data.binarize_fused if fused else data.binarize

    @property
    def more_epochs(self) -> bool:
        """Whether the run trains on: epochs left, and no early stop (`stopping.stopped_early`)."""
        progress = self.progress
        return (
            progress.epoch < self.config.epochs
            and stopping.stopped_early(progress.metrics, self.config.patience) is None
        )

    def start_epoch(self) -> None:
        """The epoch's learning rates and, unless resuming inside it, its permutation: drawn by rank 0
        from its generator (as one process draws it) and sent to the others."""
        epoch = self.progress.epoch
        self.objective.optimizer.set_learning_rates(
            self.schedule.learning_rate(epoch), self.schedule.local_learning_rate(epoch)
        )
        if self.progress.permutation is None:
            self.progress.start_epoch(epoch_permutation(self.dataset.train.shape[0], self.device, self.world))

    def checkpoint(self) -> Checkpoint:
        """What continues this run exactly: weights, optimizer states, every rank's generators, progress.
        (Gathers the ranks' generator states, and checks that every rank holds the same weights: every
        rank calls it.)"""
        digests, states = zip(*self.world.gather((weights_digest(self.vae), rng_states())))
        if len(set(digests)) > 1:
            raise TrainingError(
                f"the {self.world.size} processes' weights differ after step {self.progress.step} "
                f"(digests {', '.join(d[:12] for d in digests)}); data-parallel training lost its "
                "synchrony, so nothing is checkpointed"
            )
        optimizer = self.objective.optimizer.state_dict()
        return Checkpoint(
            config=asdict(self.config),
            model_state=self.vae.state_dict(),
            optimizer_state=optimizer["dense"],
            rng=states[0],
            rng_other_ranks=list(states[1:]),
            world_size=self.world.size,
            progress=self.progress,  # written out (copied) when the state is saved
            local_optimizer_state=optimizer["sparse"],
        )

    def nonfinite(self, step: int, what: str) -> TrainingError:
        config = self.config
        rate = self.schedule.learning_rate(self.progress.epoch)
        rate_text = (
            f"@lr {config.lr}"
            if rate == config.lr
            else f"{rate:.3g} in force this epoch: @lr {config.lr} on its schedule"
        )
        return TrainingError(
            f"the loss or its gradient became NaN or infinite at step {step} of {what} "
            f"(epoch {self.progress.epoch + 1}, estimator {config.estimator}). Likely causes: a learning "
            f"rate too high ({rate_text}), or for a Gaussian likelihood a @sigma too small. "
            + self.kept()
            + "; @on_nonfinite skip skips such steps instead"
        )

    def kept(self) -> str:
        """What the run folder keeps of this run, said truly: its last checkpoint, or none yet."""
        path = self.folder.checkpoint_path
        if path.exists():
            return f"{path} holds the last good state, untouched"
        return f"no checkpoint had been written yet (the first comes after epoch {self.config.checkpoint_every}), so none is kept"

    def check_finite(self, test_loss: float) -> None:
        """Refuse to record or checkpoint a model whose weights or test loss are not finite (possible with
        --on-nonfinite skip, which skips non-finite steps but not a model that overflows on the test split)."""
        if not (math.isfinite(test_loss) and all(torch.isfinite(p).all() for p in self.vae.parameters())):
            raise TrainingError(
                f"after epoch {self.progress.epoch + 1} the model's weights or its test loss "
                f"({test_loss}) are not finite, so it is not checkpointed; {self.kept()}"
            )


def epoch_permutation(n: int, device: torch.device, world: World) -> torch.Tensor:
    """An epoch's order of the n training images: drawn by rank 0 from torch's generator (as one process
    draws it; the other ranks draw nothing) and sent to every rank."""
    mine = torch.randperm(n, device=device) if world.is_main else torch.empty(n, dtype=torch.int64, device=device)
    return world.broadcast(mine)


def weights_digest(vae: VAE) -> str:
    """SHA-256 of every parameter's bytes: equal digests, bit-identical weights."""
    digest = hashlib.sha256()
    for tensor in vae.state_dict().values():
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
