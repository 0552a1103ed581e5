"""The command line of `python scripts/evaluate.py RUN_DIR` (also installed as `pyro-vae-evaluate`):
a trained run's test negative ELBO and importance-sampled log p(x), from its checkpoint.

Under `torchrun` the processes share the images and their results meet (`evaluate`'s sharding): the
numbers are the single process's, computed in a fraction of the time; rank 0 prints and writes them."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from pyro_vae import files, memory
from pyro_vae.cli.arguments import with_flags
from pyro_vae.cli.parser import Parser
from pyro_vae.core.model import VAE
from pyro_vae.distributed import SINGLE, World, world_prefix
from pyro_vae.errors import ConfigError, PyroVAEError, os_error_line
from pyro_vae.evaluation import annealing
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.settings import check_values, whole_number
from pyro_vae.threads import use_threads
from pyro_vae.training import fits
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.inputs import resolve_device
from pyro_vae.training.trained_run import MAX_IMPORTANCE_SAMPLES, SEEDS, load_run


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        description="Evaluate a run's checkpoint on its test split: negative ELBO (exact KL) and log p(x) by "
        "importance sampling, log (1/K) sum_k p(x, z_k) / q(z_k|x). Nats per image.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="a run folder holding checkpoint.pt")
    p.add_argument(
        "--samples", type=int, default=5000, metavar="K", help="importance samples per image (default: %(default)s)"
    )
    p.add_argument("--images", type=int, default=None, help="evaluate the first N test images only (default: all)")
    p.add_argument(
        "--prior",
        action="store_true",
        help="also give the naive estimate with z_k ~ p(z), to see how far below it falls",
    )
    p.add_argument(
        "--amortization-gap",
        type=int,
        default=0,
        metavar="STEPS",
        help="also fit the best diagonal Gaussian q for each image with the decoder fixed (STEPS Adam "
        "steps) and report ELBO(local) - ELBO(encoder), the encoder's amortization gap (default: 0, off)",
    )
    p.add_argument(
        "--ais",
        type=int,
        default=0,
        metavar="STEPS",
        help="also estimate log p(x) by annealed importance sampling from the prior with STEPS intermediate "
        "distributions and HMC moves: a much tighter stochastic lower bound, at STEPS x (leapfrog + 1) "
        "decoder gradients per chain (default: 0, off)",
    )
    p.add_argument("--chains", type=int, default=16, help="--ais: chains per image (default: %(default)s)")
    p.add_argument("--leapfrog", type=int, default=10, help="--ais: leapfrog steps per HMC move (default: %(default)s)")
    p.add_argument(
        "--bdmc",
        action="store_true",
        help="--ais: also run bidirectional Monte Carlo on --images images simulated from the model (default "
        "100): forward AIS's lower and reverse AIS's upper bound on their log p(x), whose gap bounds AIS's error",
    )
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument(
        "--max-rows",
        type=int,
        default=65_536,
        help="(image, sample) pairs per chunk, which bounds memory (default: %(default)s)",
    )
    p.add_argument("--data-dir", default=None, help="where the run's dataset lives, if not where it was")
    p.add_argument("--cuda", action="store_true", help="evaluate on the GPU")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for PyTorch (default: the cores not busy with other work)",
    )
    return p


def run(args: argparse.Namespace, world: World = SINGLE) -> dict:
    """The evaluation `args` ask for, written beside the run (rank 0) and returned as a dict."""
    check_arguments(args, world)
    use_threads(args.threads)
    device = world.device(resolve_device(args.cuda).type == "cuda")
    trained = load_run(args.run, device, args.data_dir)
    vae = trained.vae
    x, rows = trained.test_data().first_test(args.images)
    rows_at_once = min(args.max_rows, x.shape[0] * args.samples)
    memory.check_fits(
        rows_at_once * memory.bytes_per_row(vae.config, x.element_size(), backward=False),
        f"an evaluation chunk of {rows_at_once:,} (image, sample) rows (--max-rows {args.max_rows:,})",
        "lower --max-rows",
        device,
    )
    evaluate.check_finite_model(vae, x, rows)
    if args.amortization_gap and vae.top is not None:
        raise ConfigError("--amortization-gap fits a diagonal Gaussian over one stochastic layer; this run has two")
    if args.amortization_gap and rows is not None:
        raise ConfigError(
            "--amortization-gap compares an encoder with per-image fits; this run's guide is already local"
        )
    tic = time.perf_counter()
    with evaluate.progress_bar(x.shape[0], f"log p(x), K = {args.samples}", world.is_main) as bar:
        estimate = evaluate.log_likelihood(
            vae, x, args.samples, seed=args.seed, max_rows=args.max_rows, rows=rows, world=world, progress=bar.update
        )
    result = dict(
        run=str(args.run),
        epoch=len(trained.metrics),
        images=x.shape[0],
        samples=args.samples,
        test_negative_elbo=evaluate.negative_elbo(vae, x, rows=rows, world=world),
        test_log_likelihood=estimate.value,
        standard_error=estimate.standard_error,
        spread_over_images=estimate.spread,
        **estimate.diagnostics(),
        seconds=time.perf_counter() - tic,
        device=str(device),
        processes=world.size,
    )
    if args.prior:
        result.update(naive_estimate(vae, x, args, world))
    if args.amortization_gap:
        result.update(amortization_gap(vae, x, args.amortization_gap, args.seed, args.max_rows))
    if args.ais:
        result.update(annealed_estimate(vae, x, args))
    if args.bdmc:
        result.update(sandwich(vae, args))
    if world.is_main:
        stem = Path(args.run) / f"evaluation-epoch{result['epoch']}-K{args.samples}"
        files.write_json(stem.with_suffix(".json"), result)
        files.atomic_write(
            stem.with_name(stem.name + "-images.csv"), lambda f: f.write(per_image_csv(estimate).encode())
        )
    return result


def naive_estimate(vae: VAE, x: torch.Tensor, args: argparse.Namespace, world: World) -> dict:
    """log p(x) with the prior as the proposal (the naive estimate), and its standard error."""
    with evaluate.progress_bar(x.shape[0], f"naive estimate, K = {args.samples}", world.is_main) as bar:
        naive = evaluate.log_likelihood(
            vae,
            x,
            args.samples,
            seed=args.seed,
            max_rows=args.max_rows,
            proposal="prior",
            world=world,
            progress=bar.update,
        )
    return dict(prior_sampling_log_likelihood=naive.value, prior_sampling_standard_error=naive.standard_error)


def annealed_estimate(vae: VAE, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """log p(x) of the test images by forward AIS (a stochastic lower bound), with its standard error."""
    tic = time.perf_counter()
    with evaluate.progress_bar(x.shape[0] * args.ais, f"AIS, T = {args.ais}", unit="image-step") as bar:
        estimate = annealing.ais(vae, x, annealing_of(args), bar.update)
    return dict(
        ais_steps=args.ais,
        ais_chains=args.chains,
        ais_leapfrog=args.leapfrog,
        ais_log_likelihood=estimate.value,
        ais_standard_error=estimate.standard_error,
        ais_acceptance=estimate.acceptance,
        ais_seconds=time.perf_counter() - tic,
    )


def annealing_of(args: argparse.Namespace) -> annealing.Annealing:
    return annealing.Annealing(args.ais, args.chains, args.leapfrog, args.seed, args.max_rows)


def sandwich(vae: VAE, args: argparse.Namespace) -> dict:
    """BDMC on images simulated from the model: forward and reverse AIS bounds on their log p(x)."""
    x, z = annealing.simulate(vae, args.images or 100, args.seed)
    tic = time.perf_counter()
    with evaluate.progress_bar(2 * x.shape[0] * args.ais, f"BDMC, T = {args.ais}", unit="image-step") as bar:
        bounds = annealing.bdmc(vae, x, z, annealing_of(args), bar.update)
    return dict(
        bdmc_images=x.shape[0],
        bdmc_lower=bounds.lower.value,
        bdmc_lower_standard_error=bounds.lower.standard_error,
        bdmc_upper=bounds.upper.value,
        bdmc_upper_standard_error=bounds.upper.standard_error,
        bdmc_gap=bounds.gap,
        bdmc_seconds=time.perf_counter() - tic,
    )


def check_arguments(args: argparse.Namespace, world: World) -> None:
    """Sizes in range, and the combinations that cannot run, refused in one line."""
    check_values(TrainConfig, threads=args.threads)
    whole_number("--seed", args.seed, *SEEDS)  # what the API takes: any seed of torch's generators
    if args.samples < 1 or (args.images is not None and args.images < 1) or args.max_rows < 1:
        raise ConfigError("--samples, --images and --max-rows must be at least 1")
    if args.samples > MAX_IMPORTANCE_SAMPLES or args.max_rows > 100_000_000:
        raise ConfigError(
            f"--samples must be at most {MAX_IMPORTANCE_SAMPLES:,} and --max-rows at most 100,000,000 "
            f"(got {args.samples:,}, {args.max_rows:,}); a larger K would run for days"
        )
    if args.amortization_gap < 0:
        raise ConfigError(f"--amortization-gap must be 0 (off) or a number of steps, got {args.amortization_gap}")
    if args.amortization_gap and world.size > 1:
        raise ConfigError("--amortization-gap fits every image in one process; run it without torchrun")
    if args.ais < 0 or args.ais > annealing.MAX_STEPS:
        raise ConfigError(f"--ais must be 0 (off) or a number of steps up to {annealing.MAX_STEPS:,}, got {args.ais}")
    if not (1 <= args.chains <= annealing.MAX_CHAINS and 1 <= args.leapfrog <= annealing.MAX_LEAPFROG):
        raise ConfigError(
            f"--chains must be 1 to {annealing.MAX_CHAINS:,} and --leapfrog 1 to {annealing.MAX_LEAPFROG}, "
            f"got {args.chains}, {args.leapfrog}"
        )
    if args.bdmc and not args.ais:
        raise ConfigError("--bdmc runs AIS both ways: give its number of steps with --ais STEPS")
    if (args.ais or args.bdmc) and world.size > 1:
        raise ConfigError("--ais and --bdmc run in one process; run them without torchrun")


def per_image_csv(estimate: evaluate.LogLikelihood) -> str:
    """One row per test image: its log p^(x), jackknife standard error, effective sample size, Pareto k-hat."""
    rows = zip(
        estimate.per_image.tolist(),
        estimate.per_image_variance.sqrt().tolist(),
        estimate.effective_sample_size.tolist(),
        estimate.pareto_k.tolist(),
    )
    return "image,log_likelihood,standard_error,effective_sample_size,pareto_k\n" + "".join(
        f"{i},{lp:.6f},{se:.6g},{ess:.6g},{k:.4f}\n" for i, (lp, se, ess, k) in enumerate(rows)
    )


def amortization_gap(vae: VAE, x: torch.Tensor, steps: int, seed: int, max_rows: int, samples: int = 100) -> dict:
    """ELBO of the encoder's q and of the best diagonal Gaussian fitted per image (decoder fixed), both
    estimated with `samples` samples per image and exact KL, and their difference, the amortization gap
    (for a diagonal guide; for a richer family the fit is the diagonal one, and the difference mixes both)."""
    _, _, local = fits.fit_local_guide(vae, x, steps=steps, seed=seed, eval_samples=samples, max_rows=max_rows)
    amortized = -evaluate.negative_elbo(vae, x, num_samples=samples, seed=seed, chunk_size=max(1, max_rows // samples))
    return dict(
        local_fit_steps=steps,
        amortized_elbo=amortized,
        local_elbo=local.mean().item(),
        amortization_gap=local.mean().item() - amortized,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_device(args.cuda)
        world = World.from_environment(args.cuda)
    except PyroVAEError as error:
        print(f"error: {with_flags(error)}", file=sys.stderr)
        return 2
    try:
        result = run(args, world)
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
        print_result(result, args)
        sys.stdout.flush()
    except OSError as error:  # stdout on a full disk (> /dev/full), a closed pipe: the evaluation is in RUN
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left for Python's exit to flush
        saved = Path(args.run) / f"evaluation-epoch{result['epoch']}-K{args.samples}.json"
        print(
            f"error: cannot print the results ({error.strerror or error}); they are saved in {saved}", file=sys.stderr
        )
        return 2
    return 0


def print_result(result: dict, args: argparse.Namespace) -> None:
    """What a person reads: the estimates, the weights' diagnostics (a warning on stderr when unreliable), and
    each extra estimate asked for."""
    print(
        f"{result['run']} (epoch {result['epoch']}, {result['images']} test images): negative ELBO "
        f"{result['test_negative_elbo']:.3f}; log p(x) {result['test_log_likelihood']:.3f} "
        f"± {result['standard_error']:.3f} (K = {result['samples']}, {result['seconds']:.1f} s)"
    )
    print(
        f"importance weights: effective sample size {result['effective_sample_size_min']:.1f} to "
        f"{result['effective_sample_size_median']:.1f} (minimum, median over images) of K = {result['samples']}; "
        f"Pareto k-hat at most {result['pareto_k_max']:.2f}"
    )
    if result["pareto_k_above_0_7"]:
        print(
            f"warning: Pareto k-hat above 0.7 for {result['pareto_k_above_0_7']} of {result['images']} images: "
            "their weights' variance may be infinite, so their log p(x) and its ± cannot be trusted; use more "
            "samples or a guide closer to the posterior",
            file=sys.stderr,
        )
    if args.prior:
        print(f"naive estimate from prior samples, same K: {result['prior_sampling_log_likelihood']:.3f}")
    if args.ais:
        print(annealed_line(result))
    if args.bdmc:
        print(sandwich_line(result))
    if args.amortization_gap:
        print(
            f"ELBO with the encoder's q {result['amortized_elbo']:.3f}; with q fitted per image "
            f"({args.amortization_gap} steps) {result['local_elbo']:.3f}; amortization gap {result['amortization_gap']:.3f}"
        )


def annealed_line(result: dict) -> str:
    """AIS's estimate beside importance sampling's, in one line."""
    return (
        f"AIS (T = {result['ais_steps']}, {result['ais_chains']} chains, {result['ais_leapfrog']} leapfrog steps, "
        f"HMC acceptance {result['ais_acceptance']:.2f}): log p(x) {result['ais_log_likelihood']:.3f} "
        f"± {result['ais_standard_error']:.3f}, {result['ais_log_likelihood'] - result['test_log_likelihood']:+.3f} "
        f"nats against importance sampling ({result['ais_seconds']:.1f} s)"
    )


def sandwich_line(result: dict) -> str:
    """BDMC's two bounds and their gap, in one line."""
    return (
        f"BDMC on {result['bdmc_images']} images simulated from the model (T = {result['ais_steps']}): log p(x) "
        f"between {result['bdmc_lower']:.3f} ± {result['bdmc_lower_standard_error']:.3f} (forward AIS) and "
        f"{result['bdmc_upper']:.3f} ± {result['bdmc_upper_standard_error']:.3f} (reverse AIS), a gap of "
        f"{result['bdmc_gap']:.3f} nats ({result['bdmc_seconds']:.1f} s)"
    )
