"""Is the standard error of the importance-sampled log p(x) calibrated? On trained 2-D VAEs, whose log p(x)
the grid gives exactly (`pyro_vae.posterior`), estimate the mean log p(x) of 100 test images with many seeds
and compare the estimate's real spread with the standard error each seed reports, for the jackknife (what
`pyro_vae.evaluate.log_likelihood` reports) and the delta method (Var[w / mean w] / K per image, what it
reported before). A ratio spread / standard error of 1 is calibrated; above 1 the error is too small.

Two readings of the spread, printed side by side: the standard deviation over seeds of the mean estimate,
against the root mean square of the reported standard errors; and, pooled over images (which are
independent, so the expectation is the same, with far less noise), sqrt(sum_i Var_seeds(log p^_i) /
sum_i mean_seeds(v_i)). tests/test_importance.py asserts the pooled jackknife ratio for 1,000 steps and
30 seeds.

    python benchmarks/log_px_calibration.py                                  # 1,000 steps, 30 seeds
    python benchmarks/log_px_calibration.py --steps 300 1000 3000 --seeds 40 --samples 10 100 1000
"""

from __future__ import annotations

import argparse
import sys

import torch

from pyro_vae import data
from pyro_vae.evaluation import importance, posterior
from pyro_vae.training import fits


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--steps", type=int, nargs="+", default=[1000], help="training steps of each model (default: 1000)")
    p.add_argument("--samples", type=int, nargs="+", default=[100, 1000], help="K (default: 100 1000)")
    p.add_argument("--seeds", type=int, default=30, help="(default: %(default)s)")
    p.add_argument("--images", type=int, default=100, help="test images (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    x = data.prepare(data.load_dataset("default"), "dynamic").test[: args.images].double()
    print(
        f"| steps | K | log p(x), grid | mean estimate | spread / SE, jackknife | delta method | "
        f"pooled over images: jackknife | delta method |  ({args.seeds} seeds, {args.images} images)"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for steps in args.steps:
        vae = fits.train_2d_vae(steps)
        with torch.no_grad():
            truth = posterior.grid_posterior(vae, x, points=201).log_marginal.mean().item()
            for samples in args.samples:
                r = importance.calibration(vae, x, samples, args.seeds)
                print(
                    f"| {steps} | {samples} | {truth:.3f} | {r['mean']:.3f} | {r['jackknife']:.2f} | {r['delta']:.2f} | "
                    f"{r['jackknife_pooled']:.2f} | {r['delta_pooled']:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
