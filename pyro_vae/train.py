"""The SVI loop: Pyro's ELBO estimator for the loss, Adam on the module's parameters, per-epoch
metrics, an atomic checkpoint after every epoch, and figures at the end.

One step is what `pyro.infer.SVI.step` does (the estimator's differentiable loss, backward, an
optimizer step), with a torch optimizer over the VAE's own parameters instead of Pyro's global
param store, so runs never share state.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import pyro
import torch
from tqdm.auto import tqdm

from . import data, evaluate, files, plots
from .errors import ConfigError, DataError, PyroVAEError
from .estimators import build_elbo, loss_function
from .model import VAE, ModelConfig


class TrainingError(PyroVAEError):
    """Training diverged (a NaN or infinite loss)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; `config.json` in the run folder is this, as JSON."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: str = "default"
    data_dir: str | None = None
    binarization: str | None = None  # None: dynamic for a Bernoulli likelihood, none otherwise
    estimator: str = "trace"
    num_particles: int = 1
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    seed: int = 0
    threads: int | None = None  # None: PyTorch's default
    beta: float = 1.0
    kl_warmup: float = 0.0  # epochs of linear KL warm-up from 0 to beta
    cuda: bool = False
    out: str | None = None  # None: runs/<timestamp>

    def __post_init__(self) -> None:
        for name in ("num_particles", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ConfigError(f"--beta must be a positive number, got {self.beta} (beta -> 0 approaches an autoencoder)")
        if self.kl_warmup < 0:
            raise ConfigError(f"--kl-warmup must be zero or positive, got {self.kl_warmup}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.binarization is not None and self.binarization not in data.BINARIZATIONS:
            raise ConfigError(f"unknown binarization {self.binarization!r}; choose one of: {', '.join(data.BINARIZATIONS)}")
        build_elbo(self.estimator, self.num_particles)  # validates the name and particle count

    @property
    def resolved_binarization(self) -> str:
        if self.binarization is not None:
            return self.binarization
        return "dynamic" if self.model.likelihood == "bernoulli" else "none"

    def kl_scale(self, step: int, steps_per_epoch: int) -> float:
        """beta, ramped linearly over the first `kl_warmup` epochs: beta * min(1, step / warm-up steps)."""
        if self.kl_warmup == 0:
            return self.beta
        return self.beta * min(1.0, step / (self.kl_warmup * steps_per_epoch))


def resolve_device(cuda: bool) -> torch.device:
    if not cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--cuda was given but PyTorch sees no usable CUDA GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda")


def load_training_data(config: TrainConfig, device: torch.device) -> data.Dataset:
    """The dataset, checked against the likelihood's support, binarized as configured, on `device`."""
    dataset = data.load_dataset(config.dataset, config.data_dir)
    data.check_pixels(dataset)
    binarization = config.resolved_binarization
    if config.model.likelihood == "bernoulli" and binarization == "none" and not dataset.is_binary:
        raise DataError(
            f"the Bernoulli likelihood needs pixels that are 0 or 1, but {config.dataset} has grey pixels; "
            "use --binarize dynamic or static, or a likelihood for grey pixels "
            "(--likelihood continuous-bernoulli or gaussian)"
        )
    return data.prepare(dataset, binarization).to(device)


def new_run_dir(out: str | None) -> Path:
    """The run folder: `out` if given (it must not hold files yet), else a new runs/<timestamp>."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path, n = Path("runs") / stamp, 1
        while path.exists():
            path, n = Path("runs") / f"{stamp}-{n}", n + 1
    else:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"output folder {path} already exists and is not empty; choose a new --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def train(
    config: TrainConfig,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Train a VAE with SVI as `config` says and write the run folder; returns its path.

    `summary.json` is written last, so a folder without it is an unfinished run.
    """
    device = resolve_device(config.cuda)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    pyro.set_rng_seed(config.seed)  # seeds Python's, NumPy's and torch's generators
    dataset = load_training_data(config, device)
    model_config = ModelConfig(**{**asdict(config.model), "x_dim": dataset.x_dim})
    config = TrainConfig(**{**asdict(config), "model": model_config})

    out = new_run_dir(config.out)
    files.write_json(out / "config.json", asdict(config))
    vae = VAE(model_config).to(device)
    loss = loss_function(vae, build_elbo(config.estimator, config.num_particles))
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)
    dynamic = config.resolved_binarization == "dynamic"
    n_train = dataset.train.shape[0]
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    log(
        f"training on {dataset.name} ({n_train} train / {dataset.test.shape[0]} test images, "
        f"binarization {config.resolved_binarization}) on {device}; writing {out}"
    )

    metrics: list[dict] = []
    step, started = 0, time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=not progress)
        tic = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for batch_index in torch.randperm(n_train, device=device).split(config.batch_size):
            x = dataset.train[batch_index]
            if dynamic:
                x = data.binarize(x)
            step += 1
            optimizer.zero_grad(set_to_none=True)
            batch_loss = loss(x, config.kl_scale(step, steps_per_epoch))
            batch_loss.backward()
            optimizer.step()
            loss_sum += batch_loss.detach() * x.shape[0]
            bar.update()
            if progress and bar.n % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / min(bar.n * config.batch_size, n_train):.2f}")
        bar.close()
        train_loss = loss_sum.item() / n_train
        seconds = time.perf_counter() - tic
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"the training loss became {train_loss} in epoch {epoch} (step {step}, estimator "
                f"{config.estimator}); try a smaller --lr, or for a Gaussian likelihood a larger --sigma. "
                f"The checkpoint in {out} holds the last good epoch"
            )
        vae.eval()
        test_loss = evaluate.negative_elbo(vae, dataset.test)
        vae.train()
        record = dict(
            epoch=epoch,
            step=step,
            train_loss=train_loss,
            test_loss=test_loss,
            seconds=seconds,
            images_per_second=n_train / seconds,
            kl_scale=config.kl_scale(step, steps_per_epoch),
        )
        metrics.append(record)
        files.append_jsonl(out / "metrics.jsonl", record)
        files.save_checkpoint(
            out / "checkpoint.pt",
            dict(
                config=asdict(config),
                epoch=epoch,
                step=step,
                model_state=vae.state_dict(),
                optimizer_state=optimizer.state_dict(),
                metrics=metrics,
            ),
        )
        log(
            f"epoch {epoch:3d}/{config.epochs}  train {train_loss:8.3f}  test {test_loss:8.3f} nats/image  "
            f"{seconds:6.2f} s  {n_train / seconds:8.0f} images/s"
        )

    write_figures(vae, dataset, metrics, out)
    summary = dict(
        final=metrics[-1],
        best_test_loss=min(m["test_loss"] for m in metrics),
        total_seconds=time.perf_counter() - started,
        device=str(device),
        threads=torch.get_num_threads(),
        versions=dict(torch=torch.__version__, pyro=pyro.__version__),
        binarization=config.resolved_binarization,
    )
    files.write_json(out / "summary.json", summary)
    log(f"done: test negative ELBO {metrics[-1]['test_loss']:.3f} nats/image; outputs in {out}")
    return out


@torch.no_grad()
def write_figures(vae: VAE, dataset: data.Dataset, metrics: list[dict], out: Path, n_images: int = 16) -> None:
    """loss_curve.png, reconstructions.png, samples.png and latent.png in `out`."""
    vae.eval()
    generator = torch.Generator(device=dataset.test.device).manual_seed(0)
    shape = dataset.image_shape
    plots.loss_curve(metrics, out / "loss_curve.png")

    originals = dataset.test[:n_images]
    loc, _ = vae.encode(originals)
    reconstructions = vae.decode_mean(loc)
    plots.image_grid(
        torch.cat([originals, reconstructions]), out / "reconstructions.png", 2, shape,
        "test images (top) and the decoder's mean at mu(x) (bottom)",
    )
    z = torch.randn((64, vae.config.z_dim), generator=generator, device=dataset.test.device)
    plots.image_grid(vae.decode_mean(z), out / "samples.png", 8, shape, "decoder means of prior samples z ~ N(0, I)")

    means = torch.cat([vae.encode(chunk)[0] for chunk in dataset.test[:5000].split(1000)])
    labels = None if dataset.test_labels is None else dataset.test_labels[:5000]
    plots.latent(means, labels, out / "latent.png")
    vae.train()
