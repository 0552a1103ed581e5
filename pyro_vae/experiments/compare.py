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
from pyro_vae.core.estimators import IMPORTANCE_WEIGHTED
from pyro_vae.core.model import VAE, ModelConfig, parameter_count
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.settings import whole_number
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.inputs import load_training_data
from pyro_vae.training.objective import make_loss, make_objective
from pyro_vae.training.step import Batch, svi_step


@dataclass(frozen=True)
class CompareConfig:
    """What `scripts/compare_estimators.py` measures; every field is a flag of the script."""

    dataset: str = "default"
    data_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    estimators: tuple[str, ...] = ("trace", "meanfield")  # variance and training curves
    timed: tuple[str, ...] = ("trace", "meanfield", "jit-trace", "jit-meanfield", "iwae")  # time per step
    iwae_particles: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    steps: int = 1500  # training budget of every run
    early_step: int = 50  # the "early" snapshot
    eval_every: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    draws: int = 200  # R, independent draws for the variance at each snapshot
    variance_batch: int = 100
    bootstrap: int = 1000
    timing_steps: int = 20
    timing_repeats: int = 5

    LIMITS = {
        "iwae_particles": (1, 100_000), "batch_size": (1, 100_000), "steps": (1, 1_000_000),
        "early_step": (1, 1_000_000), "eval_every": (1, 1_000_000), "seeds": (1, 100), "draws": (3, 100_000),
    }  # fmt: skip

    def __post_init__(self) -> None:
        """Each count inside LIMITS (seeds: how many), refused in one line naming the field as @name."""
        for name, (low, high) in self.LIMITS.items():
            whole_number(f"@{name}", len(self.seeds) if name == "seeds" else getattr(self, name), low, high)

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
    """What training does to each batch: a fresh Bernoulli draw under dynamic binarization, else nothing."""
    return data.binarize if config.training.resolved_binarization == "dynamic" else (lambda x: x)


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


def curve_summary(curves: list[dict], estimators: tuple[str, ...]) -> list[dict]:
    """Per estimator, the final test loss over seeds: mean, standard deviation, min and max."""
    rows = []
    final_step = max(point["step"] for point in curves)
    for estimator in estimators:
        finals = [p["test_loss"] for p in curves if p["estimator"] == estimator and p["step"] == final_step]
        seconds = [p["seconds"] for p in curves if p["estimator"] == estimator and p["step"] == final_step]
        std = statistics.stdev(finals) if len(finals) > 1 else float("nan")
        rows.append(
            dict(
                estimator=estimator,
                steps=final_step,
                seeds=len(finals),
                final_test_loss=statistics.mean(finals),
                std=std,
                min=min(finals),
                max=max(finals),
                train_seconds=statistics.mean(seconds),
            )
        )
    return rows


def _ci(row: dict, key: str, digits: int = 3) -> str:
    return f"{row[key]:.{digits}g} [{row[key + '_low']:.{digits}g}, {row[key + '_high']:.{digits}g}]"


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        f"### {title}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


VARIANCE_COLUMNS = ("loss_std", "encoder_variance", "encoder_snr", "decoder_variance", "decoder_snr")
RATIO_COLUMNS = ("loss_std", "encoder_variance", "decoder_variance", "encoder_snr")


def markdown_report(variance: list[dict], ratios: list[dict], timing: list[dict], summary: list[dict]) -> str:
    """The four tables of a comparison, as markdown; every interval is a 95% bootstrap interval."""
    lines = (
        _table(
            "Gradient variance and loss spread (one batch, R independent draws)",
            ["snapshot", "estimator", "mean loss", "per-image loss std", "encoder tr Cov", "encoder SNR"]
            + ["decoder tr Cov", "decoder SNR"],
            [
                [r["snapshot"], r["estimator"], f"{r['loss']:.2f}", *(_ci(r, k) for k in VARIANCE_COLUMNS)]
                for r in variance
            ],
        )
        + _table(
            "Ratios (first estimator over the other; above 1: the other has less)",
            ["snapshot", "ratio", "per-image loss std", "encoder tr Cov", "decoder tr Cov", "encoder SNR"],
            [[r["snapshot"], r["ratio"], *(_ci(r, key) for key in RATIO_COLUMNS)] for r in ratios],
        )
        + _table(
            "Training at equal budget (test negative ELBO, nats per image)",
            ["estimator", "steps", "seeds", "final test loss, mean ± std", "min", "max", "training seconds"],
            [_summary_row(r) for r in summary],
        )
        + _table(
            "Time per training step (median of the rounds, [min, max])",
            ["estimator", "particles", "ms per step", "ratio to the first"],
            [_timing_row(r) for r in timing],
        )
    )
    return "\n".join(lines[:-1]) + "\n"


def _summary_row(r: dict) -> list[str]:
    spread = f"{r['final_test_loss']:.2f} ± {r['std']:.2f}"
    return [r["estimator"], str(r["steps"]), str(r["seeds"]), spread, f"{r['min']:.2f}", f"{r['max']:.2f}"] + [
        f"{r['train_seconds']:.1f}"
    ]


def _timing_row(r: dict) -> list[str]:
    ms = f"{r['ms_per_step']:.2f} [{r['ms_min']:.2f}, {r['ms_max']:.2f}]"
    return [r["estimator"], str(r["particles"]), ms, f"{r['ratio_to_first']:.2f}"]
