"""What each estimator buys at the same wall-clock: the IWAE paper's 784-200-200-50 tanh VAE on dynamically
binarized MNIST, trained by each estimator for the same number of training seconds, then test log p(x).

Each estimator trains epoch by epoch (its run resumed exactly, one more epoch at a time,
`pyro_vae.experiments.equal_time`) until its training seconds (evaluation and checkpoints excluded) reach
--minutes; the epoch that crosses the budget is kept, so each run's actual seconds are printed beside it. Then test log p(x) on the first --images test images with
K = --eval-samples, its standard error and the importance weights' diagnostics. Every run shares the seed,
the recipe (batch 100, lr 1e-3 constant, decoder output bias at the data's logit, Adam eps 1e-4) and K = 5
samples per image per step where K applies (miwae and piwae: M = 2 copies of K = 5; ciwae: beta 0.5).
A folder already trained to the budget is evaluated, not trained again; an unfinished one is resumed.

    python benchmarks/equal_time.py --data-dir DATA_DIR --minutes 8 --threads 1 --out /tmp/equal-time
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pyro_vae import TrainConfig
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.experiments import equal_time

PAPER_NETWORK = ModelConfig(hidden=(200, 200), z_dim=50, activation="tanh")
# name -> (estimator, K, M): the contenders at K = 5 samples per image per step
CONTENDERS = {
    "trace": ("trace", 5, 1),
    "stl": ("stl", 5, 1),
    "iwae": ("iwae", 5, 1),
    "dreg": ("dreg", 5, 1),
    "miwae": ("miwae", 5, 2),
    "piwae": ("piwae", 5, 2),
    "ciwae": ("ciwae", 5, 1),
}


def contender_config(name: str, args: argparse.Namespace) -> TrainConfig:
    """The shared recipe with one contender's estimator, K and M."""
    estimator, k, m = CONTENDERS[name]
    return TrainConfig(
        model=PAPER_NETWORK,
        dataset="mnist",
        data_dir=args.data_dir,
        validation=0,
        estimator=estimator,
        num_particles=k,
        iwae_copies=m,
        batch_size=100,
        lr=1e-3,
        adam_eps=1e-4,
        init_output_bias=True,
        epochs=1,
        seed=args.seed,
        threads=args.threads,
        out=str(args.out / name),
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--minutes", type=float, default=8.0, help="training minutes per contender (default: 8)")
    p.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS), metavar="NAME")
    p.add_argument("--images", type=int, default=1000, help="test images evaluated (default: 1000)")
    p.add_argument("--eval-samples", type=int, default=5000, help="K of the log p(x) estimate (default: 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, required=True, help="a folder: one run folder per contender, equal_time.json")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"| estimator | K | M | epochs | train min | test ELBO | test log p(x), {args.images} images, "
        f"K = {args.eval_samples} | k-hat > 0.7 | median ESS |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in args.contenders:
        run = equal_time.train_for(contender_config(name, args), 60 * args.minutes)
        rows.append(r := dict(contender=name, **equal_time.measured(run, args.eval_samples, args.images)))
        print(
            f"| {name} | {r['K']} | {r['M']} | {r['epochs']} | {r['train_seconds'] / 60:.1f} | {r['test_elbo']:.2f} | "
            f"{r['test_log_likelihood']:.2f} ± {r['standard_error']:.2f} | {r['pareto_k_above_0_7']} | {r['effective_sample_size_median']:.1f} |",
            flush=True,
        )
        (args.out / "equal_time.json").write_text(json.dumps(dict(minutes=args.minutes, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
