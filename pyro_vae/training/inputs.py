"""What a run trains on, found before anything is built: its device, its data (checked against the
likelihood's support, split, binarized, on the device) and whether one step fits in memory."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from pyro_vae import data, memory
from pyro_vae.core.model import parameter_count
from pyro_vae.distributed import World
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.training.config import TrainConfig


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
    """The dataset (`images`, for dataset "user"; a built-in one's training images as uint8), checked against
    the likelihood's support, with its validation split held out and binarized as configured, on `device`;
    for the local guide only its fixed subsets: `local_points` training images and as many test images (or
    the whole test split, if smaller)."""
    if (config.dataset == data.USER_DATA) != (images is not None):
        raise ConfigError(
            "this run trains on images given in Python: pass them again (data=(train, test))"
            if images is None
            else f"images were given, but the config names dataset {config.dataset!r}; use dataset={data.USER_DATA!r}"
        )
    dataset = images if images is not None else data.load_dataset(config.dataset, config.data_dir, eight_bit=True)
    data.check_pixels(dataset)
    binarization = config.resolved_binarization
    bernoulli = config.model.likelihood == "bernoulli" and not config.model.is_program  # a program checks its own
    if dataset.streamed:
        if config.model.guide == "local" or config.init_output_bias or config.labels_kept:
            raise ConfigError(
                "your training images are streamed (too large for memory as float32), and @guide local, "
                "@init_output_bias and @labels_kept each need them all at once: give fewer or smaller images"
            )
        dataset = replace(dataset, train=dataset.train.with_options(workers=config.data_workers))
    if bernoulli and binarization == "none" and not dataset.streamed and not dataset.is_binary:
        raise DataError(
            f"the Bernoulli likelihood needs pixels that are 0 or 1, but {config.dataset} has grey pixels; "
            "use @binarization dynamic or static, or a likelihood for grey pixels "
            "(@likelihood continuous-bernoulli or gaussian)"
        )
    if config.resolved_validation:
        dataset = data.hold_out(dataset, config.resolved_validation)
    if config.labels_kept:
        dataset = data.keep_labels(dataset, config.labels_kept, config.labels_seed)
    dataset = data.prepare(dataset, binarization)
    if config.model.guide == "local":
        points = config.model.local_points
        if points > dataset.train.shape[0]:
            raise ConfigError(
                f"@local_points {points} is more than the {dataset.train.shape[0]} training images of {config.dataset}"
            )
        dataset = data.with_rows(data.fixed_subset(dataset, points, min(points, dataset.test.shape[0])))
    return dataset.to(device)


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


def check_run_images(run: object, trained_on: int, images: data.Dataset) -> None:
    """The images given for the run in folder `run` have the pixels it was trained on (`trained_on` a row)."""
    if images.x_dim != trained_on:
        raise ConfigError(
            f"{run} was trained on images of {trained_on:,} pixels; the images given have {images.x_dim:,} "
            f"(shape {images.image_shape}): give the run's own images"
        )
