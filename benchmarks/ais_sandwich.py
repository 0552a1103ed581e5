"""How far the importance-sampled log p(x) is from the truth: IS against AIS on the same test images, and the
BDMC sandwich on images simulated from the model, for a trained run.

For each T of --ais-steps: forward AIS on the first --images test images (--chains chains each), beside IS with
K = --samples on the same images; for each T of --bdmc-steps: forward and reverse AIS on --bdmc-images images
simulated from the model (--bdmc-chains chains each), whose gap bounds the error of either. Every row with its
standard error and seconds; a markdown table, and ais_sandwich.json in the run folder.

    python benchmarks/ais_sandwich.py RUN_DIR --images 100 --ais-steps 100 1000 --bdmc-images 10 \
        --bdmc-steps 100 1000 10000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import pyro_vae
from pyro_vae.evaluation import annealing
from pyro_vae.evaluation import likelihood as evaluate


def timed(what, *args, **kwargs) -> tuple[object, float]:
    tic = time.perf_counter()
    return what(*args, **kwargs), time.perf_counter() - tic


def test_rows(run: pyro_vae.TrainedRun, args: argparse.Namespace) -> list[dict]:
    """IS and AIS at each T on the same test images."""
    x, _ = run.test_data().first_test(args.images)
    estimate, seconds = timed(evaluate.log_likelihood, run.vae, x, args.samples)
    rows = [dict(method=f"IS, K = {args.samples}", value=estimate.value, se=estimate.standard_error, seconds=seconds)]
    print(
        f"| {rows[0]['method']} | {estimate.value:.2f} ± {estimate.standard_error:.2f} | | {seconds:.0f} |", flush=True
    )
    for steps in args.ais_steps:
        ais, seconds = timed(annealing.ais, run.vae, x, annealing.Annealing(steps, args.chains, args.leapfrog))
        rows.append(dict(method=f"AIS, T = {steps}", value=ais.value, se=ais.standard_error, seconds=seconds,
                         acceptance=ais.acceptance))  # fmt: skip
        print(f"| AIS, T = {steps}, {args.chains} chains | {ais.value:.2f} ± {ais.standard_error:.2f} | "
              f"{ais.value - estimate.value:+.2f} | {seconds:.0f} |", flush=True)  # fmt: skip
    return rows


def sandwich_rows(run: pyro_vae.TrainedRun, args: argparse.Namespace) -> list[dict]:
    """The BDMC bounds at each T on the same simulated images."""
    x, z = annealing.simulate(run.vae, args.bdmc_images, seed=1)
    rows = []
    for steps in args.bdmc_steps:
        settings = annealing.Annealing(steps, args.bdmc_chains, args.leapfrog)
        bounds, seconds = timed(annealing.bdmc, run.vae, x, z, settings)
        lower, upper = bounds.lower, bounds.upper
        rows.append(dict(steps=steps, lower=lower.value, lower_se=lower.standard_error, upper=upper.value,
                         upper_se=upper.standard_error, gap=bounds.gap, seconds=seconds))  # fmt: skip
        print(f"| {steps} | {lower.value:.2f} ± {lower.standard_error:.2f} | {upper.value:.2f} ± "
              f"{upper.standard_error:.2f} | {bounds.gap:.2f} | {seconds:.0f} |", flush=True)  # fmt: skip
    return rows


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--images", type=int, default=100, help="test images for IS and AIS (default: 100)")
    p.add_argument("--samples", type=int, default=5000, help="IS's K (default: 5000)")
    p.add_argument("--ais-steps", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--leapfrog", type=int, default=10)
    p.add_argument("--bdmc-images", type=int, default=10)
    p.add_argument("--bdmc-chains", type=int, default=4)
    p.add_argument("--bdmc-steps", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run = pyro_vae.load_run(args.run, data_dir=args.data_dir)
    print(f"`{' '.join(sys.argv)}`\n\n| first {args.images} test images | log p(x) | AIS - IS | seconds |")
    print("|---|---:|---:|---:|")
    tested = test_rows(run, args)
    print(f"\n| T ({args.bdmc_images} simulated images, {args.bdmc_chains} chains) | forward AIS (lower) | reverse AIS (upper) | gap | seconds |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|")
    sandwiched = sandwich_rows(run, args)
    report = dict(command=" ".join(sys.argv), test=tested, bdmc=sandwiched)
    (args.run / "ais_sandwich.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
