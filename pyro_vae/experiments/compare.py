"""Estimators measured against each other: gradient variance, training curves and time per step.

For one batch x of B images the ELBO is E_q[log p(x|z)] - KL(q(z|x) || p(z)). `Trace_ELBO` estimates
both terms from the sampled z; `TraceMeanField_ELBO` computes the KL term in closed form and samples only
the reconstruction term. Over R independent draws of an estimator's loss L_r and gradient g_r:

    per-image loss std     = sqrt(B * Var[L])          (L is a mean over B images)
    total gradient variance = tr Cov[g] = sum_j Var[g_j] (for encoder and decoder parameters apart)
    gradient SNR           = ||E g|| / sqrt(tr Cov[g]),  with ||E g||^2 estimated without bias as
                             ||mean g||^2 - tr Cov[g] / R

and 95% confidence intervals from a bootstrap over the R draws.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import pyro
import torch

from pyro_vae import data, memory
from pyro_vae.core.estimators import ESTIMATORS, IMPORTANCE_WEIGHTED
from pyro_vae.core.model import VAE, parameter_count
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.settings import check_declared, reuse, setting, whole_number
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.inputs import load_training_data
from pyro_vae.training.objective import make_loss, make_objective
from pyro_vae.training.step import Batch, svi_step

MAX_SEEDS = 100  # training runs per estimator


@dataclass(frozen=True)
class CompareConfig:
    """What `scripts/compare_estimators.py` measures; each field declared once, a flag of the script where it has one."""

    dataset: str = reuse(TrainConfig, "dataset")
    data_dir: str | None = reuse(TrainConfig, "data_dir", on_resume=False)
    model: ModelConfig = field(default_factory=ModelConfig)
    estimators: tuple[str, ...] = setting(
        ("trace", "meanfield"), "compared for variance and training curves; ratios are to the first",
        choices=tuple(ESTIMATORS), nargs="+",
    )  # fmt: skip
    timed: tuple[str, ...] = setting(
        ("trace", "meanfield", "jit-trace", "jit-meanfield", "iwae"), "estimators timed per step",
        choices=tuple(ESTIMATORS), nargs="+",
    )  # fmt: skip
    iwae_particles: int = setting(5, "K of the importance-weighted estimators", low=1, high=100_000)
    batch_size: int = reuse(TrainConfig, "batch_size", high=100_000)
    lr: float = reuse(TrainConfig, "lr", flag=None)
    steps: int = setting(1500, "training steps per run", low=1, high=1_000_000)
    early_step: int = setting(50, "the early snapshot", low=1, high=1_000_000)
    eval_every: int = setting(100, "steps between test evaluations", low=1, high=1_000_000)
    seeds: tuple[int, ...] = setting((0, 1, 2), "the seeds of the training runs per estimator", flag=None, low=0)
    draws: int = setting(200, "R, gradient draws per snapshot", low=3, high=100_000)
    variance_batch: int = setting(100, "test images of the gradient draws", flag=None, low=1, high=100_000)
    bootstrap: int = setting(1000, "bootstrap resamples of each interval", flag=None, low=1, high=1_000_000)
    timing_steps: int = setting(20, "steps a timing round", flag=None, low=1, high=1_000_000)
    timing_repeats: int = setting(5, "timing rounds", flag=None, low=1, high=1_000)
    threads: int | None = reuse(TrainConfig, "threads", on_resume=False)

    def __post_init__(self) -> None:
        """Each setting inside its declared range (seeds: 1 to 100 of them)."""
        for name in ("estimators", "timed", "seeds"):
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))
        check_declared(self)
        whole_number("@seeds", len(self.seeds), 1, MAX_SEEDS)

    def check_memory(self, x_dim: int) -> None:
        """A training step (batch x K rows) and the gradient draws (R x the parameters, float64) within memory."""
        model = replace(self.model, x_dim=x_dim)
        parameters = parameter_count(model)
        rows = self.batch_size * self.iwae_particles
        memory.check_fits(
            memory.step_bytes(model, rows, parameters) + self.draws * parameters * 8,
            f"a step of {rows:,} rows (@batch_size {self.batch_size:,} x @iwae_particles {self.iwae_particles:,}) "
            f"and @draws {self.draws:,} gradients of {parameters:,} parameters",
            "lower @batch_size, @iwae_particles or @draws",
        )

    def num_particles(self, estimator: str) -> int:
        return self.iwae_particles if estimator in IMPORTANCE_WEIGHTED else 1

    @property
    def training(self) -> TrainConfig:
        """The data settings as training reads them (dataset, folder, binarization for the likelihood)."""
        # every training image trains: the comparison selects nothing, and docs/ESTIMATORS.md was measured so
        return TrainConfig(model=self.model, dataset=self.dataset, data_dir=self.data_dir, validation=0, lr=self.lr)

    def training_with(self, estimator: str) -> TrainConfig:
        """`training` with `estimator` and its number of samples: what `objective.make_objective` builds from."""
        return replace(self.training, estimator=estimator, num_particles=self.num_particles(estimator))


def load_data(config: CompareConfig) -> data.Dataset:
    """The dataset as training sees it: checked, its test split binarized once where the likelihood
    needs it; training batches are binarized as drawn (`batch_binarizer`)."""
    return load_training_data(config.training, torch.device("cpu"))


def batch_binarizer(config: CompareConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """What training does to each batch: its pixels as float32 (`data.pixels`), then a fresh Bernoulli draw
    under dynamic binarization."""
    if config.training.resolved_binarization == "dynamic":
        return lambda x: data.binarize(data.pixels(x))
    return data.pixels


def new_vae(config: CompareConfig, x_dim: int, seed: int) -> VAE:
    pyro.set_rng_seed(seed)
    return VAE(replace(config.model, x_dim=x_dim))


def train_run(
    config: CompareConfig,
    dataset: data.Dataset,
    estimator: str,
    seed: int,
    snapshot_steps: tuple[int, ...] = (),
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict], dict[int, dict]]:
    """Train for `config.steps` steps of Adam on `estimator`'s loss; returns the curve (test negative ELBO
    with exact KL, 1 sample, every `eval_every` steps, beside the training seconds so far, evaluation
    excluded) and the model's state at each of `snapshot_steps`. `progress(1)` is called after each step."""
    vae = new_vae(config, dataset.x_dim, seed)
    loss, optimizer = make_objective(config.training_with(estimator), vae)
    binarize = batch_binarizer(config)
    curve, snapshots, seconds, step = [], {}, 0.0, 0

    def record() -> None:
        if step in snapshot_steps:
            snapshots[step] = {k: v.clone() for k, v in vae.state_dict().items()}
        if step % config.eval_every == 0 or step == config.steps:
            curve.append(
                dict(
                    estimator=estimator,
                    seed=seed,
                    step=step,
                    seconds=seconds,
                    test_loss=evaluate.negative_elbo(vae, dataset.test),
                )
            )

    record()
    while step < config.steps:
        for index in torch.randperm(dataset.train.shape[0]).split(config.batch_size):
            tic = time.perf_counter()
            svi_step(loss, optimizer, Batch(binarize(dataset.train[index])))
            seconds += time.perf_counter() - tic
            step += 1
            record()
            if progress is not None:
                progress(1)
            if step == config.steps:
                break
    return curve, snapshots


def gradient_draws(
    vae: VAE, estimator: str, x: torch.Tensor, draws: int, seed: int, num_particles: int = 1, copies: int = 1
) -> dict:
    """R = `draws` independent (loss, gradient) pairs of the estimator (K = `num_particles`, M = `copies`
    for miwae and piwae) at fixed parameters and batch:
    {"loss": (R,), "encoder": (R, P_enc), "decoder": (R, P_dec)} in float64."""
    training = TrainConfig(model=vae.config, estimator=estimator, num_particles=num_particles, iwae_copies=copies)
    loss = make_loss(training, vae)
    groups = {"encoder": vae.encoder_parameters(), "decoder": vae.decoder_parameters()}
    out = {"loss": [], "encoder": [], "decoder": []}
    pyro.set_rng_seed(seed)
    for _ in range(draws):
        vae.zero_grad(set_to_none=True)
        value = loss(x, 1.0)
        value.backward()
        out["loss"].append(value.detach().double())
        for name, params in groups.items():
            out[name].append(torch.cat([p.grad.reshape(-1) for p in params]).double())
    return {name: torch.stack(values) for name, values in out.items()}


def resample_counts(draws: int, bootstrap: int, seed: int) -> torch.Tensor:
    """(bootstrap, R) multiplicities of R draws resampled with replacement; row 0 is the sample itself."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(draws, (bootstrap, draws), generator=g)
    counts = torch.zeros(bootstrap, draws, dtype=torch.float64).scatter_add_(
        1, index, torch.ones_like(index, dtype=torch.float64)
    )
    counts[0] = 1.0
    return counts


def gradient_statistics(g: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """tr Cov[g] and the SNR ||E g|| / sqrt(tr Cov[g]) for every resample (row of `counts`) of the R rows
    of g, through the Gram matrix G = g g^T: for counts c summing to R,
    sum_r c_r ||g_r - gbar||^2 = sum_r c_r G_rr - c^T G c / R and ||gbar||^2 = c^T G c / R^2."""
    r = g.shape[0]
    gram = g @ g.T
    quadratic = ((counts @ gram) * counts).sum(1)
    variance = ((counts @ gram.diagonal()) - quadratic / r) / (r - 1)
    signal = (quadratic / r**2 - variance / r).clamp(min=0)
    return dict(variance=variance, snr=(signal / variance).sqrt())


def loss_statistics(losses: torch.Tensor, counts: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    """Mean loss and the per-image loss std sqrt(B Var[L]) for every resample of the R losses."""
    r = losses.shape[0]
    mean = counts @ losses / r
    variance = (counts @ losses.pow(2) - r * mean.pow(2)) / (r - 1)
    return dict(loss=mean, loss_std=(batch * variance).sqrt())


def interval(samples: torch.Tensor) -> tuple[float, float, float]:
    """(estimate, 2.5% and 97.5% bootstrap quantiles); row 0 is the estimate on the sample itself."""
    low, high = torch.quantile(samples, torch.tensor([0.025, 0.975], dtype=samples.dtype)).tolist()
    return samples[0].item(), low, high


def variance_table(
    config: CompareConfig, dataset: data.Dataset, snapshots: dict[str, dict]
) -> tuple[list[dict], list[dict]]:
    """For each snapshot and estimator, the statistics of the module docstring with 95% intervals; and
    for each snapshot the ratio of every estimator's statistics to the first estimator's."""
    x = dataset.test[: config.variance_batch]  # binarized once by load_data where the likelihood needs it
    counts = resample_counts(config.draws, config.bootstrap, seed=99)
    rows, ratios = [], []
    for where, state in snapshots.items():
        samples = {}
        for estimator in config.estimators:
            vae = new_vae(config, dataset.x_dim, 0)
            vae.load_state_dict(state)
            draws = gradient_draws(
                vae, estimator, x, config.draws, seed=7, num_particles=config.num_particles(estimator)
            )
            stats = loss_statistics(draws["loss"], counts, x.shape[0])
            for group in ("encoder", "decoder"):
                for key, value in gradient_statistics(draws[group], counts).items():
                    stats[f"{group}_{key}"] = value
            samples[estimator] = stats
            rows.append(dict(snapshot=where, estimator=estimator, **_with_intervals(stats)))
        reference = config.estimators[0]
        for estimator in config.estimators[1:]:
            ratio = {
                key: samples[reference][key] / samples[estimator][key] for key in samples[estimator] if key != "loss"
            }
            ratios.append(dict(snapshot=where, ratio=f"{reference} / {estimator}", **_with_intervals(ratio)))
    return rows, ratios


def _with_intervals(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    out = {}
    for key, samples in stats.items():
        out[key], out[f"{key}_low"], out[f"{key}_high"] = interval(samples)
    return out


def time_steps(config: CompareConfig, dataset: data.Dataset) -> list[dict]:
    """ms per training step (loss, backward, Adam) of each estimator in `config.timed`, on batches of
    `batch_size` training images: `timing_repeats` rounds of `timing_steps` steps, the estimators
    interleaved within each round so that a slow spell of the machine hits them all."""
    x = batch_binarizer(config)(dataset.train[: config.batch_size])
    runs = {}
    for estimator in config.timed:
        vae = new_vae(config, dataset.x_dim, 0)
        runs[estimator] = make_objective(config.training_with(estimator), vae)

    def step(estimator: str) -> None:
        svi_step(*runs[estimator], Batch(x))

    for estimator in config.timed:  # warm-up, compilation included
        for _ in range(3):
            step(estimator)
    times: dict[str, list[float]] = {estimator: [] for estimator in config.timed}
    for _ in range(config.timing_repeats):
        for estimator in config.timed:
            tic = time.perf_counter()
            for _ in range(config.timing_steps):
                step(estimator)
            times[estimator].append(1000 * (time.perf_counter() - tic) / config.timing_steps)
    reference = statistics.median(times[config.timed[0]])
    return [
        dict(
            estimator=estimator,
            particles=config.num_particles(estimator),
            ms_per_step=statistics.median(ms),
            ms_min=min(ms),
            ms_max=max(ms),
            ratio_to_first=statistics.median(ms) / reference,
        )
        for estimator, ms in times.items()
    ]
