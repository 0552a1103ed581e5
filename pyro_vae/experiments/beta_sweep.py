"""From the VAE back to the autoencoder: train at KL weights beta from above 1 down to 0, and measure each
model's rate and distortion on the test split (Alemi et al. 2018, "Fixing a Broken ELBO"):

    rate        R = E_x KL(q(z|x) || p(z))        (nats; exact for the diagonal Gaussian guide)
    distortion  D = -E_x E_q[log p(x|z)]           (nats; S samples of z per image)
    -ELBO = D + R,  and training at weight beta minimizes D + beta R.

The autoencoder's point is the point-mass guide at beta = 0: its distortion is measured the same way
(z = mu(x)), and its rate is infinite (a point mass has no density against the prior).
Every point is a run folder of the training engine (`train`), so an interrupted sweep resumes each run
exactly and a finished point is read back, not retrained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.evaluation import sampling
from pyro_vae.evaluation.progress import progress_bar
from pyro_vae.settings import check_declared, reuse, setting
from pyro_vae.training.checkpoint.resume import flatten, load_run_checkpoint, resumed_config
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.loop import train
from pyro_vae.training.trained_run import TrainedRun

AUTOENCODER = "autoencoder"


MAX_SAMPLES = 100_000  # S of the distortion: far past where its Monte Carlo error matters
CHUNK_ROWS = 65_536  # (image, sample) rows evaluated at once, whatever S: the memory stays bounded


@dataclass(frozen=True)
class SweepConfig:
    """What `scripts/beta_sweep.py` trains and measures; every field is a flag of the script (the model's
    @likelihood and @z_dim too), declared once: those it shares with training by `settings.reuse`."""

    betas: tuple[float, ...] = setting(
        (0.0, 0.1, 0.3, 1.0, 3.0), "KL weights, one model each", low=0, high=1e6, nargs="+"
    )
    autoencoder: bool = setting(True, "also the point-mass guide at beta 0 (an autoencoder)")
    dataset: str = reuse(TrainConfig, "dataset")
    data_dir: str | None = reuse(TrainConfig, "data_dir", on_resume=False)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(z_dim=10))
    epochs: int = reuse(TrainConfig, "epochs", default=20, help="epochs per model", on_resume=False)
    batch_size: int = reuse(TrainConfig, "batch_size", default=128)
    lr: float = reuse(TrainConfig, "lr")
    seed: int = reuse(TrainConfig, "seed")
    samples: int = setting(10, "z samples per test image for the distortion", low=1, high=MAX_SAMPLES)
    threads: int | None = reuse(TrainConfig, "threads", on_resume=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if not self.betas:
            raise ConfigError("@betas must be one or more numbers, zero or more each")
        check_declared(self)

    def points(self) -> list[tuple[str, float, str]]:
        """(name, beta, guide) of every model of the sweep, the autoencoder last."""
        points = [(f"beta-{beta:g}", beta, self.model.guide) for beta in sorted(set(self.betas))]
        return points + ([(AUTOENCODER, 0.0, "delta")] if self.autoencoder else [])

    def training(self, beta: float, guide: str, out: Path) -> TrainConfig:
        model = ModelConfig(**{**self.model.__dict__, "guide": guide})
        return TrainConfig(
            model=model,
            dataset=self.dataset,
            data_dir=self.data_dir,
            estimator="trace",
            beta=beta,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            threads=self.threads,
            out=str(out),
        )


def train_point(config: TrainConfig, log: Callable[[str], None]) -> TrainedRun:
    """The run in folder `config.out`: trained, resumed where it stopped, or read back when finished."""
    folder = Path(config.out)
    if not (folder / "checkpoint.pt").is_file():
        return train(config, progress=True, log=log)
    checkpoint = load_run_checkpoint(folder, use="continue the sweep in")
    given = {k: v for k, v in flatten(config.to_dict()).items() if k != "out" and v is not None}  # None: resolved
    stored = resumed_config(checkpoint, given)  # as the CLI's --resume: another run's folder is refused
    return train(replace(stored, out=config.out), progress=True, log=log, checkpoint=checkpoint)


@torch.no_grad()
def measure(run: TrainedRun, beta: float, samples: int, images: int = 8) -> dict:
    """Rate, distortion and -ELBO on the test split, and the pictures: prior samples and reconstructions."""
    x = run.test_images()
    with progress_bar(x.shape[0], f"distortion of {run.path.name}, S = {samples}") as bar:
        chunk = max(1, CHUNK_ROWS // samples)
        terms = evaluate.elbo_terms(run.vae, x, num_samples=samples, chunk_size=chunk, progress=bar.update)
    rate = math.inf if run.vae.is_point_mass else terms.kl
    priced_rate = beta * rate if beta > 0 else 0.0  # beta = 0 prices no rate, an infinite one included
    return dict(
        beta=beta,
        guide=run.config.model.guide,
        rate=rate,
        distortion=terms.reconstruction,
        negative_elbo=terms.reconstruction + rate,
        objective=terms.reconstruction + priced_rate,
        epochs=run.config.epochs,
        folder=str(run.path),
        prior_samples=sampling.prior_samples(run.vae, images, seed=0, device=run.device).cpu(),
        reconstructions=sampling.reconstructions(run.vae, x[:images]).cpu(),
        originals=x[:images].cpu(),
        image_shape=run.dataset.image_shape,
    )


def sweep(config: SweepConfig, out: Path, log: Callable[[str], None] = print, log_epochs: bool = False) -> list[dict]:
    """Every point of the sweep, trained (or resumed, or read back) in out/<name>, and measured (the
    training engine sets `config.threads`); `log` hears a line per point and, with `log_epochs`, the training's
    lines too (its start and each epoch: a long point says where it is)."""
    points = []
    for name, beta, guide in config.points():
        training_log = (lambda line, name=name: log(f"{name}: {line}")) if log_epochs else (lambda line: None)
        run = train_point(config.training(beta, guide, out / name), log=training_log)
        point = dict(name=name, **measure(run, beta, config.samples))
        log(
            f"{name:>12}: rate {point['rate']:8.2f}  distortion {point['distortion']:8.2f}  "
            f"-ELBO {point['negative_elbo']:8.2f} nats"
        )
        points.append(point)
    return points


def table(points: list[dict]) -> list[dict]:
    """The numbers of each point (no pictures), JSON- and CSV-ready (an infinite rate as the string "inf")."""
    keys = ("name", "beta", "guide", "rate", "distortion", "negative_elbo", "objective", "epochs", "folder")
    return [{k: ("inf" if point[k] == math.inf else point[k]) for k in keys} for point in points]
