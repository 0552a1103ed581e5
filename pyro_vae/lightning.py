"""The engine as a LightningModule (the `lightning` extra), so that `lightning.Trainer` trains any model of
the engine, the built-in VAE or your own Pyro program, with its loggers, callbacks, checkpoints and
strategies (DDP included):

    module = VAEModule(TrainConfig(estimator="iwae", num_particles=5), model=my_model, guide=my_guide)
    lightning.Trainer(max_epochs=10).fit(module)

`training_step` is the engine's step (`training.step.svi_step`: the estimator's per-image loss, its
backward through Lightning's `manual_backward`, fused Adam skipping a non-finite step on the device) on the
engine's batches: each epoch's permutation drawn from torch's generator as the engine's loop draws it, the
images binarized afresh per batch, the KL weight and learning rate of `config`'s schedule. Under DDP rank 0's
permutation is sent to every rank and each steps on its share of every batch, as under torchrun. After each
training epoch the test split's negative ELBO and its terms are logged (`test_loss`, `test_reconstruction`,
`test_kl`, and `validation_loss` with a validation split), as the engine records them; `train_loss` is the
epoch's mean per-image loss. What the engine's own loop adds and Lightning does not: the run folder, exact
resume (Lightning's checkpoints hold the weights and Adam's state, not the random generators), --compile,
the local guide, --labelled-batches and --labelled-per-batch, --patience (Lightning's EarlyStopping does it).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

try:
    import lightning
except ImportError as missing:
    raise ImportError(
        'pyro_vae.lightning needs the lightning extra: pip install -e ".[lightning]" in a checkout, or pip install '
        "lightning"
    ) from missing
import pyro
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from pyro_vae import data as data_module
from pyro_vae.core.parts import Parts
from pyro_vae.distributed import SINGLE, World
from pyro_vae.errors import ConfigError, ConfigTypeError
from pyro_vae.training.build import build_training
from pyro_vae.training.checkpoint.generators import rank_seed
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.epoch import training_batch
from pyro_vae.training.epoch_end import split_elbo_terms
from pyro_vae.training.loop import given_to_run
from pyro_vae.training.run import TrainingError, epoch_permutation
from pyro_vae.training.step import svi_step

__all__ = ["VAEModule"]


class EpochBatches(IterableDataset):
    """Each epoch's batches of training-image numbers: `draw()` gives (this rank's share, the batch's size)."""

    def __init__(self, draw: Callable[[], list[tuple[torch.Tensor, int]]], steps: int):
        self.draw, self.steps = draw, steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        return iter(self.draw())

    def __len__(self) -> int:
        return self.steps


class VAEModule(lightning.LightningModule):
    """The engine's model, objective and step for `lightning.Trainer`: `config` as for `pyro_vae.train`, and
    your own `data`, `encoder`, `decoder`, `guide`, or Pyro `model` and `guide`, as keywords."""

    def __init__(
        self,
        config: TrainConfig | None = None,
        *,
        data: data_module.Dataset | tuple | None = None,
        encoder: torch.nn.Module | None = None,
        decoder: torch.nn.Module | None = None,
        guide: object = None,
        model: object = None,
    ):
        super().__init__()
        config = TrainConfig() if config is None else config
        check_lightning_config(config)
        config, images, parts = given_to_run(config, data, Parts(encoder, decoder, guide, model))
        self.config, self.dataset, self.vae, objective = build_training(config, SINGLE, parts, images)
        self.loss, self.engine_optimizer = objective
        self.steps_per_epoch = math.ceil(self.dataset.train.shape[0] / self.config.batch_size)
        self.schedule = self.config.schedule(self.steps_per_epoch)
        self.automatic_optimization = False  # the engine's step differentiates and updates

    def setup(self, stage: str) -> None:
        """Under DDP, every rank but 0 reseeds its generators (as under torchrun): its own binarization and
        noise; rank 0 keeps the one-process stream."""
        if self.world.rank > 0:
            pyro.set_rng_seed(rank_seed(self.config.seed, self.world.rank))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.engine_optimizer.dense  # fused Adam over the model's parameters

    def train_dataloader(self) -> DataLoader:
        batches = EpochBatches(self.epoch_batches, self.steps_per_epoch)
        return DataLoader(batches, batch_size=None, generator=torch.Generator())  # draws nothing of torch's

    def epoch_batches(self) -> list[tuple[torch.Tensor, int]]:
        """The epoch's permutation of the training images (rank 0's, from torch's generator, as the engine's
        loop draws it), cut into batches: this rank's share of each and the batch's size."""
        world = self.world
        permutation = epoch_permutation(self.dataset.train.shape[0], self.dataset.train.device, world)
        return [(world.shard(batch), len(batch)) for batch in permutation.split(self.config.batch_size)]

    @property
    def world(self) -> World:
        """This process among the strategy's (one, or DDP's process group)."""
        if not (dist.is_available() and dist.is_initialized()):
            return SINGLE
        return World(dist.get_rank(), dist.get_world_size())

    def training_step(self, batch: tuple[torch.Tensor, int], batch_index: int) -> torch.Tensor:
        """One step of the engine on this rank's share of the batch (a rank without images steps on one,
        weighted 0); logs the per-image loss, its epoch mean as `train_loss`."""
        own, size = batch
        rows = own if len(own) else torch.arange(1, device=own.device)
        step = self.global_step + 1
        loss, finite = svi_step(
            self.loss,
            _ThroughLightning(self),
            training_batch(
                self.dataset,
                rows,
                self.dataset.train[rows],
                data_module.binarize if self.config.resolved_binarization == "dynamic" else None,
                self.vae.takes_labels,
            ),
            self.schedule.kl_weight(step),
            weight=len(own) * self.world.size / size,
            backward=self.manual_backward,
        )
        first = self.first_bad_step  # kept on the device: no read to the host a step
        self.first_bad_step = torch.where(~finite & (first == 0), step, first)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=max(len(own), 1), sync_dist=True)
        self.log("kl_weight", float(self.schedule.kl_weight(step)), on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        self.engine_optimizer.set_learning_rates(
            self.schedule.learning_rate(epoch), self.schedule.local_learning_rate(epoch)
        )
        self.first_bad_step = torch.zeros((), dtype=torch.int64, device=self.dataset.train.device)

    def on_train_epoch_end(self) -> None:
        """A non-finite step of the epoch stops the run (with @on_nonfinite stop; it was skipped, so the weights
        are those before it); else the test split's negative ELBO and its terms (validation_loss too)."""
        first_bad = int(self.first_bad_step)
        if first_bad and self.config.on_nonfinite == "stop":
            raise TrainingError(
                f"the loss or its gradient became NaN or infinite at step {first_bad} (epoch {self.current_epoch + 1}); "
                "try a smaller @lr, or @on_nonfinite skip"
            )
        self.vae.eval()
        test, validation = split_elbo_terms(self.vae, self.dataset, self.world)
        self.vae.train()
        logged = dict(test_loss=test.negative_elbo, test_reconstruction=test.reconstruction, test_kl=test.kl)
        if validation is not None:
            logged["validation_loss"] = validation.negative_elbo
        self.log_dict(logged, sync_dist=True)  # equal on every rank already


class _ThroughLightning:
    """The engine's optimizer as `svi_step` takes it, its update made through Lightning's wrapper of fused Adam
    (so that the Trainer counts the steps), skipped on the device where `bad`."""

    def __init__(self, module: VAEModule):
        self.module = module
        self.param_groups = module.engine_optimizer.param_groups

    def step_unless(self, bad: torch.Tensor) -> None:
        self.module.engine_optimizer.dense.found_inf = bad.float()
        self.module.optimizers().step()


def check_lightning_config(config: TrainConfig) -> None:
    """Refuse, in one line, what the engine's own loop does and Lightning's Trainer does not."""
    if not isinstance(config, TrainConfig):
        raise ConfigTypeError(f"VAEModule needs a TrainConfig, got {type(config).__name__} {config!r:.60}")
    if config.compile:
        raise ConfigError("@compile is the engine's own loop's (pyro_vae.train); leave it out under Lightning")
    if config.model.guide == "local":
        raise ConfigError("@guide local keeps per-image parameters that Lightning does not step; use pyro_vae.train")
    if config.labelled_batches or config.labelled_per_batch:
        raise ConfigError("@labelled_batches and @labelled_per_batch are the engine's own loop's; use pyro_vae.train")
    if config.patience:
        raise ConfigError(
            "@patience is the engine's own loop's; under Lightning use its EarlyStopping callback on validation_loss"
        )
