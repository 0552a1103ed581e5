"""The command line of `python scripts/evaluate.py RUN_DIR` (also installed as `pyro-vae-evaluate`):
a trained run's test negative ELBO and importance-sampled log p(x), from its checkpoint.

Under `torchrun` the processes share the images and their results meet (`evaluate`'s sharding): the
numbers are the single process's, computed in a fraction of the time; rank 0 prints and writes them."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pyro_vae import files, memory
from pyro_vae.cli.arguments import config_from_args, settings_parser, with_flags
from pyro_vae.cli.evaluation_output import per_image_csv, print_result
from pyro_vae.core.model import VAE
from pyro_vae.core.program import Program
from pyro_vae.distributed import SINGLE, World, world_prefix
from pyro_vae.errors import ConfigError, PyroVAEError, os_error_line
from pyro_vae.evaluation import annealing
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.evaluation.program_annealing import program_ais
from pyro_vae.evaluation.progress import progress_bar
from pyro_vae.settings import check_declared, reuse, setting
from pyro_vae.threads import use_threads
from pyro_vae.training import fits
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.inputs import resolve_device
from pyro_vae.training.report import mlflow_log
from pyro_vae.training.trained_run import MAX_IMPORTANCE_SAMPLES, SEEDS, load_run

MAX_FIT_STEPS = 1_000_000  # --amortization-gap: Adam steps of the per-image fits


@dataclass(frozen=True)
class EvaluateConfig:
    """What `scripts/evaluate.py` computes; every field is a flag of the command, declared once."""

    run: str = setting(None, "a run folder holding checkpoint.pt", positional=True, metavar="RUN_DIR")
    best: bool = setting(
        False,
        "evaluate the weights of the run's epoch of lowest validation loss (best.pt, kept by a run trained "
        "with --patience), not its last",
    )
    samples: int = setting(
        5000, "importance samples per image (a larger K would run for days)", low=1, high=MAX_IMPORTANCE_SAMPLES,
        metavar="K",
    )  # fmt: skip
    images: int | None = setting(
        None, "evaluate the first N test images only", low=1, high=100_000_000, metavar="N", default_text="all"
    )
    prior: bool = setting(False, "also give the naive estimate with z_k ~ p(z), to see how far below it falls")
    amortization_gap: int = setting(
        0, "also fit the best diagonal Gaussian q for each image with the decoder fixed (STEPS Adam steps) and "
        "report ELBO(local) - ELBO(encoder), the encoder's amortization gap", low=0, high=MAX_FIT_STEPS,
        metavar="STEPS", default_text="0, off",
    )  # fmt: skip
    ais: int = setting(
        0, "also estimate log p(x) by annealed importance sampling from the prior with STEPS intermediate "
        "distributions and HMC moves: a much tighter stochastic lower bound, at STEPS x (leapfrog + 1) decoder "
        "gradients per chain", low=0, high=annealing.MAX_STEPS, metavar="STEPS", default_text="0, off",
    )  # fmt: skip
    chains: int = setting(16, "@ais: chains per image", low=1, high=annealing.MAX_CHAINS)
    leapfrog: int = setting(10, "@ais: leapfrog steps per HMC move", low=1, high=annealing.MAX_LEAPFROG)
    bdmc: bool = setting(
        False, "@ais: also run bidirectional Monte Carlo on @images images simulated from the model (default "
        "100): forward AIS's lower and reverse AIS's upper bound on their log p(x), whose gap bounds AIS's error",
    )  # fmt: skip
    seed: int = setting(0, "the seed of the estimates' draws", low=SEEDS[0], high=SEEDS[1])
    max_rows: int = setting(65_536, "(image, sample) pairs per chunk, which bounds memory", low=1, high=100_000_000)
    data_dir: str | None = reuse(
        TrainConfig, "data_dir", help="where the run's dataset lives, if not where it was", default_text="where it was"
    )
    cuda: bool = reuse(TrainConfig, "cuda", help="evaluate on the GPU", on_resume=False)
    threads: int | None = reuse(TrainConfig, "threads", default_text="the cores not busy with other work")

    def __post_init__(self) -> None:
        check_declared(self)
        if self.bdmc and not self.ais:
            raise ConfigError("@bdmc runs AIS both ways: give its number of steps with @ais STEPS")


def run(config: EvaluateConfig, world: World = SINGLE) -> dict:
    """The evaluation `config` asks for, written beside the run (rank 0) and returned as a dict."""
    check_processes(config, world)
    use_threads(config.threads)
    device = world.device(resolve_device(config.cuda).type == "cuda")
    trained = load_run(config.run, device, config.data_dir, best=config.best)
    vae = trained.vae
    x, rows = trained.test_data().first_test(config.images)
    labels = trained.test_data().test_labels[: x.shape[0]] if vae.takes_labels else None  # a program of (x, y)
    check_model(config, vae, x, rows, device, labels)
    tic = time.perf_counter()
    with progress_bar(x.shape[0], f"log p(x), K = {config.samples}", world.is_main) as bar:
        estimate = evaluate.log_likelihood(
            vae,
            x,
            config.samples,
            seed=config.seed,
            max_rows=config.max_rows,
            rows=rows,
            world=world,
            progress=bar.update,
            labels=labels,
        )
    result = dict(
        run=str(config.run),
        epoch=len(trained.metrics),
        weights="best" if config.best else "last",
        images=x.shape[0],
        samples=config.samples,
        test_negative_elbo=evaluate.negative_elbo(vae, x, rows=rows, world=world, labels=labels),
        test_log_likelihood=estimate.value,
        standard_error=estimate.standard_error,
        spread_over_images=estimate.spread,
        **estimate.diagnostics(),
        seconds=time.perf_counter() - tic,
        device=str(device),
        processes=world.size,
    )
    if config.prior:
        result.update(naive_estimate(vae, x, config, world))
    if config.amortization_gap:
        result.update(amortization_gap(vae, x, config.amortization_gap, config.seed, config.max_rows))
    if config.ais:
        result.update(annealed_estimate(vae, x, config, labels))
    if config.bdmc:
        result.update(sandwich(vae, config))
    if world.is_main:
        stem = Path(config.run) / f"evaluation-epoch{result['epoch']}-K{config.samples}"
        files.write_json(stem.with_suffix(".json"), result)
        mlflow_log.log_evaluation(Path(config.run), result, stem.with_suffix(".json"))
        files.atomic_write(
            stem.with_name(stem.name + "-images.csv"), lambda f: f.write(per_image_csv(estimate).encode())
        )
    return result


def naive_estimate(vae: VAE, x: torch.Tensor, config: EvaluateConfig, world: World) -> dict:
    """log p(x) with the prior as the proposal (the naive estimate), and its standard error."""
    with progress_bar(x.shape[0], f"naive estimate, K = {config.samples}", world.is_main) as bar:
        naive = evaluate.log_likelihood(
            vae,
            x,
            config.samples,
            seed=config.seed,
            max_rows=config.max_rows,
            proposal="prior",
            world=world,
            progress=bar.update,
        )
    return dict(prior_sampling_log_likelihood=naive.value, prior_sampling_standard_error=naive.standard_error)


def annealed_estimate(vae: VAE | Program, x: torch.Tensor, config: EvaluateConfig, labels: torch.Tensor | None) -> dict:
    """log p(x) of the test images by forward AIS (a stochastic lower bound), with its standard error; over a
    program's latent sites for a program (`program_annealing`)."""
    tic = time.perf_counter()
    with progress_bar(x.shape[0] * config.ais, f"AIS, T = {config.ais}", unit="image-step") as bar:
        if isinstance(vae, Program):
            estimate = program_ais(vae, x, annealing_of(config), labels, bar.update)
        else:
            estimate = annealing.ais(vae, x, annealing_of(config), bar.update)
    return dict(
        ais_steps=config.ais,
        ais_chains=config.chains,
        ais_leapfrog=config.leapfrog,
        ais_log_likelihood=estimate.value,
        ais_standard_error=estimate.standard_error,
        ais_acceptance=estimate.acceptance,
        ais_seconds=time.perf_counter() - tic,
    )


def annealing_of(config: EvaluateConfig) -> annealing.Annealing:
    return annealing.Annealing(config.ais, config.chains, config.leapfrog, config.seed, config.max_rows)


def sandwich(vae: VAE, config: EvaluateConfig) -> dict:
    """BDMC on images simulated from the model: forward and reverse AIS bounds on their log p(x)."""
    x, z = annealing.simulate(vae, config.images or 100, config.seed)
    tic = time.perf_counter()
    with progress_bar(2 * x.shape[0] * config.ais, f"BDMC, T = {config.ais}", unit="image-step") as bar:
        bounds = annealing.bdmc(vae, x, z, annealing_of(config), bar.update)
    return dict(
        bdmc_images=x.shape[0],
        bdmc_lower=bounds.lower.value,
        bdmc_lower_standard_error=bounds.lower.standard_error,
        bdmc_upper=bounds.upper.value,
        bdmc_upper_standard_error=bounds.upper.standard_error,
        bdmc_gap=bounds.gap,
        bdmc_seconds=time.perf_counter() - tic,
    )


def check_model(
    config: EvaluateConfig, vae: VAE | Program, x: torch.Tensor, rows: torch.Tensor | None, device, labels=None
) -> None:
    """One chunk within memory, the model's values finite on the images, and the fits' model one they fit (a
    program takes importance sampling and AIS; the rest reads the built-in VAE's parts)."""
    if isinstance(vae, Program) and (config.prior or config.amortization_gap or config.bdmc):
        raise ConfigError(
            "@prior, @amortization_gap and @bdmc read the built-in VAE's prior and guide; this run trained a program"
        )
    rows_at_once = min(config.max_rows, x.shape[0] * config.samples)
    memory.check_fits(
        rows_at_once * memory.bytes_per_row(vae.config, x.element_size(), backward=False),
        f"an evaluation chunk of {rows_at_once:,} (image, sample) rows (@max_rows {config.max_rows:,})",
        "lower @max_rows",
        device,
    )
    evaluate.check_finite_model(vae, x, rows, labels=labels)
    if config.amortization_gap and vae.top is not None:
        raise ConfigError("@amortization_gap fits a diagonal Gaussian over one stochastic layer; this run has two")
    if config.amortization_gap and rows is not None:
        raise ConfigError(
            "@amortization_gap compares an encoder with per-image fits; this run's guide is already local"
        )


def check_processes(config: EvaluateConfig, world: World) -> None:
    """The estimates that run in one process, refused under torchrun in one line."""
    if config.amortization_gap and world.size > 1:
        raise ConfigError("@amortization_gap fits every image in one process; run it without torchrun")
    if (config.ais or config.bdmc) and world.size > 1:
        raise ConfigError("@ais and @bdmc run in one process; run them without torchrun")


def amortization_gap(vae: VAE, x: torch.Tensor, steps: int, seed: int, max_rows: int, samples: int = 100) -> dict:
    """ELBO of the encoder's q and of the best diagonal Gaussian fitted per image (decoder fixed), both
    estimated with `samples` samples per image and exact KL, and their difference, the amortization gap
    (for a diagonal guide; for a richer family the fit is the diagonal one, and the difference mixes both)."""
    with progress_bar(steps, f"amortization gap: per-image fits of {x.shape[0]} images", unit="step") as bar:
        _, _, local = fits.fit_local_guide(
            vae, x, steps=steps, seed=seed, eval_samples=samples, max_rows=max_rows, progress=bar.update
        )
    amortized = -evaluate.negative_elbo(vae, x, num_samples=samples, seed=seed, chunk_size=max(1, max_rows // samples))
    return dict(
        local_fit_steps=steps,
        amortized_elbo=amortized,
        local_elbo=local.mean().item(),
        amortization_gap=local.mean().item() - amortized,
    )


def build_parser() -> argparse.ArgumentParser:
    """The flags of every field of EvaluateConfig (`arguments.settings_parser`)."""
    return settings_parser(
        EvaluateConfig,
        "Evaluate a run's checkpoint on its test split: negative ELBO (exact KL) and log p(x) by "
        "importance sampling, log (1/K) sum_k p(x, z_k) / q(z_k|x). Nats per image.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, EvaluateConfig)
        resolve_device(config.cuda)
        world = World.from_environment(config.cuda)
    except PyroVAEError as error:
        print(f"error: {with_flags(error)}", file=sys.stderr)
        return 2
    try:
        result = run(config, world)
    except (PyroVAEError, OSError) as error:
        line = os_error_line(error) if isinstance(error, OSError) else with_flags(error)
        print(f"error: {world_prefix(world)}{line}", file=sys.stderr)
        world.close(finished=False)
        return 2
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); no evaluation was written", file=sys.stderr)
        world.close(finished=False)
        return 130
    world.close(finished=True)
    if not world.is_main:
        return 0
    try:
        print_result(result)
        sys.stdout.flush()
    except OSError as error:  # stdout on a full disk (> /dev/full), a closed pipe: the evaluation is in RUN
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left for Python's exit to flush
        saved = Path(config.run) / f"evaluation-epoch{result['epoch']}-K{config.samples}.json"
        print(
            f"error: cannot print the results ({error.strerror or error}); they are saved in {saved}", file=sys.stderr
        )
        return 2
    return 0
