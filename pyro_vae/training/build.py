"""Building a run: from a config (or a checkpoint), the data on this rank's device, the VAE (with the
user's parts checked) or the user's own Pyro program (`core.program.Program`), the objective (`objective.make_objective`), the progress (new, or restored from the
checkpoint) and the run folder: a live `run.Run`."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Callable, NamedTuple

import pyro
import torch

from pyro_vae import data
from pyro_vae.core.estimators import SCORE_FUNCTION
from pyro_vae.core.model import VAE, has_distribution
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.parts import Parts, check_parts
from pyro_vae.core.program import Program
from pyro_vae.distributed import World
from pyro_vae.errors import ConfigError
from pyro_vae.threads import usable_cores, use_threads
from pyro_vae.training.checkpoint.generators import rank_seed
from pyro_vae.training.checkpoint.payload import Checkpoint
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.inputs import check_memory, check_run_images, load_training_data, resolve_device
from pyro_vae.training.objective import Objective, make_objective
from pyro_vae.training.progress import Progress
from pyro_vae.training.report.folder import RunFolder
from pyro_vae.training.restore import resumed_folder
from pyro_vae.training.run import Run


def build_run(
    config: TrainConfig,
    world: World,
    checkpoint: Checkpoint | None = None,
    log: Callable[[str], None] = print,
    parts: Parts = Parts(),
    images: data.Dataset | None = None,
) -> Run:
    """A new run of `config`, or with a `checkpoint` the run it holds, exactly where it stopped; with the
    user's own modules (`parts`) and, for `config.dataset` "user", the user's `images`."""
    old_default = checkpoint is not None and config.threads is None  # a run from before the default chose
    config = replace(config, threads=use_threads(usable_cores() if old_default else config.threads))
    if world.size > 1 and config.model.guide == "local":
        raise ConfigError(
            "@guide local keeps one table of per-image parameters and trains in one process; start it without torchrun"
        )
    config, dataset, vae, objective = build_training(config, world, parts, images, checkpoint, log)
    folder = None
    try:  # once the folder is claimed, any failure gives its lock back
        if checkpoint is None:
            folder, progress = RunFolder.create(config.out, world), Progress()
            config = replace(config, out=str(folder.path))
            if not world.is_main:
                pyro.set_rng_seed(rank_seed(config.seed, world.rank))
        else:
            folder, progress = resumed_folder(config, world, checkpoint, vae, objective.optimizer, dataset, log)
        folder.write_config(asdict(config))
        if config.tensorboard:
            folder.open_tensorboard(asdict(config))
        if config.mlflow is not None:
            folder.open_mlflow(asdict(config), config.mlflow, config.mlflow_experiment, progress.metrics)
    except BaseException:
        if folder is not None:
            folder.close()
        raise
    return Run(config, world, dataset, vae, objective, progress, folder)


class Training(NamedTuple):
    """What trains, before any run folder: the config with its resolved values, the data on this rank's
    device, the model (the VAE or the user's program) and its objective."""

    config: TrainConfig
    dataset: data.Dataset
    vae: VAE | Program
    objective: Objective


def build_training(
    config: TrainConfig,
    world: World,
    parts: Parts = Parts(),
    images: data.Dataset | None = None,
    checkpoint: Checkpoint | None = None,
    log: Callable[[str], None] = print,
) -> Training:
    """The data, the model (seeded by `config.seed`) and the objective of `config`, every refusal said first;
    the config with the values resolved from the data and the model. (`build_run` and the Lightning module.)"""
    device = world.device(resolve_device(config.cuda).type == "cuda")  # the check, then this rank's device
    if parts.is_program:
        check_program_settings(config)
    dataset = load_training_data(config, device, images)
    if checkpoint is not None:
        check_run_images(config.out, checkpoint.config["model"]["x_dim"], dataset)
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
    if not parts.is_program:  # a program's size is known once it has run (its memory is the user's to judge)
        check_memory(config, world, device)
    pyro.set_rng_seed(config.seed)  # seeds Python's, NumPy's and torch's generators
    vae = build_program(config, parts, dataset) if parts.is_program else build_vae(config, parts, dataset)
    config = replace(config, model=vae.config)
    return Training(config, dataset, vae, make_objective(config, vae, world, log))


def check_program_settings(config: TrainConfig) -> None:
    """Refuse, in one line, the settings of the built-in VAE given for a run of the user's own program."""
    if config.init_output_bias:
        raise ConfigError("@init_output_bias sets the built-in decoder's bias; your own program sets its own")
    default = ModelConfig()
    if changed := [
        f.name
        for f in fields(ModelConfig)
        if not f.metadata.get("derived") and getattr(config.model, f.name) != getattr(default, f.name)
    ]:
        raise ConfigError(
            f"ModelConfig describes the built-in VAE, and your program holds its own architecture: leave "
            f"{', '.join('@' + name for name in changed)} at the default"
        )


def build_program(config: TrainConfig, parts: Parts, dataset: data.Dataset) -> Program:
    """The user's Pyro program (`parts.model`, `parts.guide`) as a `Program` on the data's device: run once on
    two training images (binarized, where the steps binarize them), every refusal said before the first step,
    its parameters found and kept."""
    images = data.pixels(dataset.train[:2])
    if config.resolved_binarization == "dynamic":  # as the steps will see them: 0 or 1 (here rounded, no draw)
        images = images.round()
    program = Program(parts.model, parts.guide, config.model)
    if program.takes_labels and dataset.train_labels is None:
        raise ConfigError(
            "your model and guide take (x, y), and the data has no labels: give data=(train, test) as torch "
            "Datasets of (image, label) pairs, or a dataset with labels"
        )
    labels = dataset.train_labels[:2] if program.takes_labels else None
    return program.discover(program.inputs(images, labels), config.estimator)


def build_vae(config: TrainConfig, parts: Parts, dataset: data.Dataset) -> VAE:
    """The VAE of `config` and the user's `parts` on the data's device, each part checked on two training
    images (with generators of its own: the run's random streams are untouched), the decoder's output bias
    at the mean image's with `init_output_bias`."""
    train_images = dataset.train
    device = train_images.device
    vae = VAE(config.model, parts.encoder, parts.decoder, parts.guide).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        check_parts(vae, data.pixels(train_images[:2]), None if dataset.train_rows is None else dataset.train_rows[:2])
    if config.estimator in (*SCORE_FUNCTION, "stl", "dreg") and not has_distribution(vae.q):
        raise ConfigError(
            f"@estimator {config.estimator}: your guide has no forward(x) returning q(z|x) as a distribution, "
            f"and {config.estimator} needs log q at any z, not only at the guide's own samples"
        )
    if config.init_output_bias:
        vae.init_output_bias(data.pixels(train_images))
    return vae
