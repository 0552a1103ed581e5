"""Building a run: from a config (or a checkpoint), the data on this rank's device, the VAE, the loss
module (inside DDP when several processes train), the optimizer, the schedules, the progress and the run folder.

With several ranks, every rank builds the same model from the same seed (DDP also broadcasts rank 0's
weights), then reseeds its own generators, so that each rank draws its own binarization and noise; rank 0
keeps the single-process stream, so a one-process run is what it always was.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import pyro
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pyro_vae import data, memory
from pyro_vae.core.compiled import CompiledLoss, check_compiler
from pyro_vae.core.estimators import SCORE_FUNCTION, ELBOLoss, build_elbo
from pyro_vae.core.model import VAE, has_distribution, parameter_count
from pyro_vae.core.parts import Parts, check_parts
from pyro_vae.distributed import World
from pyro_vae.errors import ConfigError, DataError, PyroVAEError
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.threads import usable_cores, use_threads
from pyro_vae.training import checkpoints
from pyro_vae.training.config import TrainConfig, stored_backend
from pyro_vae.training.generators import rank_seed, rng_states, set_rng_states
from pyro_vae.training.optimizer import SVIOptimizer
from pyro_vae.training.run_folder import RunFolder
from pyro_vae.training.schedule import Schedule
from pyro_vae.training.state import Progress, TrainState


class TrainingError(PyroVAEError):
    """Training diverged (a NaN or infinite loss)."""


@dataclass
class Run:
    """Everything a training run holds while it trains, on one rank."""

    config: TrainConfig
    world: World
    dataset: data.Dataset
    vae: VAE
    loss: nn.Module  # ELBOLoss, or DDP around it
    optimizer: SVIOptimizer
    state: Progress
    folder: RunFolder
    schedule: Schedule = field(init=False)

    def __post_init__(self) -> None:
        self.schedule = Schedule.of(self.config, self.steps_per_epoch)

    @property
    def device(self) -> torch.device:
        return self.dataset.train.device

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.dataset.train.shape[0] / self.config.batch_size)

    @property
    def dynamic_binarization(self) -> bool:
        return self.config.resolved_binarization == "dynamic"

    def start_epoch(self) -> None:
        """The epoch's learning rates and, unless resuming inside it, its permutation: drawn by rank 0
        from its generator (as one process draws it) and sent to the others."""
        epoch = self.state.epoch
        self.optimizer.set_learning_rates(self.schedule.learning_rate(epoch), self.schedule.local_learning_rate(epoch))
        if self.state.permutation is None:
            n = self.dataset.train.shape[0]
            mine = (
                torch.randperm(n, device=self.device)
                if self.world.is_main
                else torch.empty(n, dtype=torch.int64, device=self.device)
            )
            self.state.start_epoch(self.world.broadcast(mine))

    def checkpoint(self) -> TrainState:
        """What continues this run exactly: weights, optimizer states, every rank's generators, progress.
        (Gathers the ranks' generator states, and checks that every rank holds the same weights: every
        rank calls it.)"""
        digests, states = zip(*self.world.gather((weights_digest(self.vae), rng_states())))
        if len(set(digests)) > 1:
            raise TrainingError(
                f"the {self.world.size} processes' weights differ after step {self.state.step} "
                f"(digests {', '.join(d[:12] for d in digests)}); data-parallel training lost its "
                "synchrony, so nothing is checkpointed"
            )
        optimizer = self.optimizer.state_dict()
        return TrainState(
            config=asdict(self.config),
            model_state=self.vae.state_dict(),
            optimizer_state=optimizer["dense"],
            rng=states[0],
            rng_other_ranks=list(states[1:]),
            world_size=self.world.size,
            progress=self.state,  # written out (copied) when the state is saved
            local_optimizer_state=optimizer["sparse"],
        )

    def nonfinite(self, step: int, what: str) -> TrainingError:
        config = self.config
        rate = self.schedule.learning_rate(self.state.epoch)
        rate_text = (
            f"@lr {config.lr}"
            if rate == config.lr
            else f"{rate:.3g} in force this epoch: @lr {config.lr} on its schedule"
        )
        return TrainingError(
            f"the loss or its gradient became NaN or infinite at step {step} of {what} "
            f"(epoch {self.state.epoch + 1}, estimator {config.estimator}). Likely causes: a learning "
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
                f"after epoch {self.state.epoch + 1} the model's weights or its test loss "
                f"({test_loss}) are not finite, so it is not checkpointed; {self.kept()}"
            )


def weights_digest(vae: VAE) -> str:
    """SHA-256 of every parameter's bytes: equal digests, bit-identical weights."""
    digest = hashlib.sha256()
    for tensor in vae.state_dict().values():
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_run(
    config: TrainConfig,
    world: World,
    checkpoint: TrainState | None = None,
    log: Callable[[str], None] = print,
    parts: Parts = Parts(),
    images: data.Dataset | None = None,
) -> Run:
    """A new run of `config`, or with a `checkpoint` the run it holds, exactly where it stopped; with the
    user's own modules (`parts`) and, for `config.dataset` "user", the user's `images`."""
    device = world.device(resolve_device(config.cuda).type == "cuda")  # the check, then this rank's device
    old_default = checkpoint is not None and config.threads is None  # a run from before the default chose
    config = replace(config, threads=use_threads(usable_cores() if old_default else config.threads))
    if world.size > 1 and config.model.guide == "local":
        raise ConfigError(
            "@guide local keeps one table of per-image parameters and trains in one process; start it without torchrun"
        )
    dataset = load_training_data(config, device, images)
    local_test_points = dataset.test.shape[0] if config.model.guide == "local" else 0
    model = replace(
        config.model, x_dim=dataset.x_dim, image_shape=dataset.image_shape, local_test_points=local_test_points
    )
    config = replace(
        config,
        model=model,
        binarization=config.resolved_binarization,
        data_dir=data.resolve_data_dir(config.dataset, config.data_dir),
        validation=config.resolved_validation,
    )
    check_memory(config, world, device)
    pyro.set_rng_seed(config.seed)  # seeds Python's, NumPy's and torch's generators
    vae = build_vae(config, parts, dataset)
    config = replace(config, model=vae.config)
    elbo = build_elbo(config.estimator, config.num_particles, config.iwae_copies, config.ciwae_beta)
    loss: nn.Module = ELBOLoss(vae, elbo, config.validate_every_step)
    if config.compile:
        loss = compiled_loss(loss, config.compile_backend, world, device, log)
    if world.size > 1:
        loss = DistributedDataParallel(
            loss, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync_each_forward()
        )
    optimizer = build_optimizer(vae, config)
    folder = None
    try:  # once the folder is claimed, any failure gives its lock back
        if checkpoint is None:
            folder, state = RunFolder.create(config.out, world), Progress()
            config = replace(config, out=str(folder.path))
            if not world.is_main:
                pyro.set_rng_seed(rank_seed(config.seed, world.rank))
        else:
            folder, state = resumed_folder(config, world, checkpoint, vae, optimizer, dataset, log)
        folder.write_config(asdict(config))
        if config.tensorboard:
            folder.open_tensorboard(asdict(config))
    except BaseException:
        if folder is not None:
            folder.close()
        raise
    return Run(config, world, dataset, vae, loss, optimizer, state, folder)


def check_memory(config: TrainConfig, world: World, device: torch.device) -> None:
    """Before the model is built: its parameters (with their gradients and Adam's two moments) and one step's
    rows (this rank's images x particles x copies) estimated (`memory`), and refused in one line if they
    cannot fit. The built-in networks are counted on the meta device (`parameter_count`), where nothing is allocated."""
    model = config.model
    parameters = parameter_count(model)
    copies = config.iwae_copies if config.estimator in ("miwae", "piwae") else 1
    rows = math.ceil(config.batch_size / world.size) * config.num_particles * copies
    memory.check_fits(
        memory.step_bytes(model, rows, parameters),
        f"a step of {rows:,} rows (@batch_size {config.batch_size:,} x @num_particles {config.num_particles:,}"
        f"{f' x @iwae_copies {copies}' if copies > 1 else ''}) through a model of {parameters:,} parameters",
        "lower @batch_size or @num_particles, or choose a smaller model (@hidden, @z_dim)",
        device,
    )


def build_vae(config: TrainConfig, parts: Parts, dataset: data.Dataset) -> VAE:
    """The VAE of `config` and the user's `parts` on the data's device, each part checked on two training
    images (with generators of its own: the run's random streams are untouched), the decoder's output bias
    at the mean image's with `init_output_bias`."""
    train_images = dataset.train
    vae = VAE(config.model, parts.encoder, parts.decoder, parts.guide).to(train_images.device)
    with torch.random.fork_rng(devices=[train_images.device] if train_images.is_cuda else []):
        check_parts(vae, train_images[:2], None if dataset.train_rows is None else dataset.train_rows[:2])
    if config.estimator in (*SCORE_FUNCTION, "stl", "dreg") and not has_distribution(vae.q):
        raise ConfigError(
            f"@estimator {config.estimator}: your guide has no forward(x) returning q(z|x) as a distribution, "
            f"and {config.estimator} needs log q at any z, not only at the guide's own samples"
        )
    if config.init_output_bias:
        vae.init_output_bias(train_images)
    return vae


def resumed_folder(
    config: TrainConfig,
    world: World,
    checkpoint: TrainState,
    vae: VAE,
    optimizer: SVIOptimizer,
    dataset: data.Dataset,
    log: Callable[[str], None],
) -> tuple[RunFolder, Progress]:
    """The run folder `config.out`, claimed, and the run restored from its `checkpoint`."""
    folder = RunFolder(Path(config.out), world.is_main)
    folder.claim(world)  # before touching anything: another process may be writing this folder
    folder.remove_stale_temporaries()
    try:
        check_unchanged(folder.checkpoint_path, checkpoint)
        state = restore(checkpoint, vae, optimizer, world, config.seed, log)
        if world.is_main:
            for notice in changed_machine(checkpoint.config, asdict(config)):
                log(f"notice: {notice}")
        evaluate.check_finite_model(vae, dataset.test, dataset.test_rows, consequence="training cannot go on from them")
        if state.permutation is not None and len(state.permutation) != dataset.train.shape[0]:
            raise ConfigError(
                f"{folder.checkpoint_path}: its epoch's permutation orders {len(state.permutation)} images, "
                f"but the run's training split has {dataset.train.shape[0]}"
            )
        state.permutation = None if state.permutation is None else state.permutation.to(dataset.train.device)
        folder.restart_metrics(state.metrics)
    except BaseException:
        folder.close()
        raise
    return folder, state


def changed_machine(stored: dict, resumed: dict) -> list[str]:
    """What changed between the run's way of computing and the resume's (device, compilation), each with what
    it costs: the run goes on from the same weights, optimizer state and position, but not bit for bit."""
    notices = []
    if stored.get("cuda", False) != resumed["cuda"]:
        where = {True: "on the GPU", False: "on the CPU"}
        notices.append(
            f"this run trained {where[stored.get('cuda', False)]} and resumes {where[resumed['cuda']]}: the noise "
            "and binarization come from that device's generator, so it does not continue bit for bit as it would have"
        )
    if compiled_as(stored) != compiled_as(resumed):
        notices.append(
            f"this run trained {compiled_as(stored)} and resumes {compiled_as(resumed)}: the loss and gradients are "
            "the same to rounding, so it does not continue bit for bit as it would have"
        )
    return notices


def compiled_as(config: dict) -> str:
    """How a run's steps run: "eagerly", or "compiled (<backend>)"."""
    return f"compiled ({stored_backend(config)})" if config.get("compile") else "eagerly"


def check_unchanged(path: Path, read: TrainState) -> None:
    """The checkpoint read before the folder was claimed is still the folder's: another process that was
    training there when the resume started may have finished since, writing later epochs."""
    epoch, step = checkpoints.position(path)
    if (epoch, step) != (read.progress.epoch, read.progress.step):
        raise ConfigError(
            f"{path} changed while this resume started (it was at step {read.progress.step}, it is now at "
            f"step {step}): another process was training this run; resume it again if it is unfinished"
        )


def restore(
    checkpoint: TrainState, vae: VAE, optimizer: SVIOptimizer, world: World, seed: int, log: Callable[[str], None]
) -> Progress:
    """Load the checkpoint's weights, optimizer states and this rank's generators; its progress."""
    vae.load_state_dict(checkpoint.model_state)
    optimizer.load_state_dict(dict(dense=checkpoint.optimizer_state, sparse=checkpoint.local_optimizer_state))
    if checkpoint.world_size != world.size and world.is_main:
        log(
            f"notice: this run was trained by {checkpoint.world_size} process(es) and resumes with {world.size}: the "
            "epoch's order and position carry over exactly, but the ranks' binarization and noise draws are no "
            "longer those of an uninterrupted run, so the result is not bit-identical to one"
        )
    states = checkpoint.rank_rng(world.rank)
    if states is None:  # a rank the run did not have before
        pyro.set_rng_seed(rank_seed(seed, world.rank))
    else:
        set_rng_states(states)
    return checkpoint.progress


def build_optimizer(vae: VAE, config: TrainConfig) -> SVIOptimizer:
    """Adam over the networks' parameters at `lr` and, for the local guide, SparseAdam over its per-point
    table at `local_lr` (see `optimizer.SVIOptimizer`)."""
    table = vae.q.table.weight if vae.is_local else None
    dense = [p for p in vae.parameters() if p is not table]
    betas = (config.adam_beta1, 0.999)
    return SVIOptimizer(dense, config.lr, betas, config.adam_eps, sparse=table, sparse_lr=config.local_lr)


def compiled_loss(
    loss: ELBOLoss, backend: str, world: World, device: torch.device, log: Callable[[str], None]
) -> CompiledLoss:
    """`--compile`: the loss as a graph traced once per batch shape and compiled by `backend`, in one process
    (the graph would bypass DDP's gradient averaging)."""
    if world.size > 1:
        raise ConfigError("@compile traces the loss of one process; start it without torchrun, or leave out @compile")
    check_compiler(backend, device)
    return CompiledLoss(loss, log, backend)


def no_buffer_sync_each_forward() -> dict:
    """DDP's option not to broadcast buffers before every forward: forward_sync_buffers where this PyTorch has
    it (it deprecates broadcast_buffers), broadcast_buffers on older ones (2.11 has only that)."""
    options = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}


def resolve_device(cuda: bool) -> torch.device:
    if not cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            "@cuda is set but PyTorch sees no usable CUDA GPU (torch.cuda.is_available() is False); to resume "
            "a run trained on a GPU on the CPU, switch @cuda off (--no-cuda)"
        )
    return torch.device("cuda")


def load_training_data(config: TrainConfig, device: torch.device, images: data.Dataset | None = None) -> data.Dataset:
    """The dataset (`images`, for dataset "user"), checked against the likelihood's support, with its
    validation split held out and binarized as configured, on `device`; for the local guide only its fixed
    subsets: `local_points` training images and as many test images (or the whole test split, if smaller)."""
    if (config.dataset == data.USER_DATA) != (images is not None):
        raise ConfigError(
            "this run trains on images given in Python: pass them again (data=(train, test))"
            if images is None
            else f"images were given, but the config names dataset {config.dataset!r}; use dataset={data.USER_DATA!r}"
        )
    dataset = images if images is not None else data.load_dataset(config.dataset, config.data_dir)
    data.check_pixels(dataset)
    binarization = config.resolved_binarization
    if config.model.likelihood == "bernoulli" and binarization == "none" and not dataset.is_binary:
        raise DataError(
            f"the Bernoulli likelihood needs pixels that are 0 or 1, but {config.dataset} has grey pixels; "
            "use @binarization dynamic or static, or a likelihood for grey pixels "
            "(@likelihood continuous-bernoulli or gaussian)"
        )
    if config.resolved_validation:
        dataset = data.hold_out(dataset, config.resolved_validation)
    dataset = data.prepare(dataset, binarization)
    if config.model.guide == "local":
        points = config.model.local_points
        if points > dataset.train.shape[0]:
            raise ConfigError(
                f"@local_points {points} is more than the {dataset.train.shape[0]} training images of {config.dataset}"
            )
        dataset = data.with_rows(data.fixed_subset(dataset, points, min(points, dataset.test.shape[0])))
    return dataset.to(device)
