"""Burda, Grosse and Salakhutdinov (2016), Table 1, one stochastic layer, reproduced with pyro-vae.

Trains the paper's architecture (784-200-200-50, tanh, Bernoulli likelihood, dynamically binarized MNIST)
with this project's Pyro VAE (`pyro_vae.train.train`, the same code as `scripts/svi_train.py`), and with
`--reference` a plain-PyTorch model trained identically in the same run (the same initial weights,
objective, batch size, Adam, learning-rate schedule and binarization; its own random draws); then estimates the test log p(x) by importance sampling with K
samples per image (5,000 in the paper) and prints a markdown row beside the paper's figure.

    python benchmarks/reproduce_iwae.py --data-dir ../shared/data --epochs 50 --reference          # CPU budget
    python benchmarks/reproduce_iwae.py --data-dir ../shared/data --estimator iwae --num-particles 5
    python benchmarks/reproduce_iwae.py --data-dir ../shared/data --epochs 3280 --batch-size 20 --cuda  # the paper's length

The paper trains with batch 20 for 3,280 passes with Adam (lr 1e-3 * 10^(-i/7) for 3^i passes, i = 0..7);
at a CPU budget this script uses a larger batch and a geometric decay from --lr to --lr-final instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_vae import PlainVAE, log_likelihood, train as train_plain  # noqa: E402

from pyro_vae import data, evaluate  # noqa: E402
from pyro_vae.model import VAE, ModelConfig  # noqa: E402
from pyro_vae.train import TrainConfig, train  # noqa: E402

# Table 1 of Burda et al. (2016), one stochastic layer, test log p(x) with k = 5000
PAPER = {("trace", 1): -86.76, ("trace", 50): -86.35, ("iwae", 5): -85.54, ("iwae", 50): -84.78}
ARCHITECTURE = ModelConfig(hidden=(200, 200), z_dim=50, activation="tanh")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help=f"folder holding MNIST/raw (default: ${data.DATA_DIR_ENV})")
    p.add_argument("--estimator", choices=("trace", "meanfield", "iwae"), default="trace",
                   help="VAE with Monte Carlo KL as in the paper (trace), with exact KL (meanfield), or IWAE (default: %(default)s)")
    p.add_argument("--num-particles", type=int, default=1, help="k of the training objective (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-final", type=float, default=1e-4)
    p.add_argument("--eval-samples", type=int, default=5000, help="K of the test log p(x) (default: %(default)s)")
    p.add_argument("--eval-images", type=int, default=None, help="evaluate the first N test images (default: all 10,000)")
    p.add_argument("--reference", action="store_true", help="also train and evaluate the plain-PyTorch model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="the Pyro run's folder (default: a new runs/<timestamp>)")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    # the paper's protocol: all 60,000 training images train, the last model is reported (no selection)
    config = TrainConfig(model=ARCHITECTURE, dataset="mnist", data_dir=args.data_dir, validation=0, estimator=args.estimator,
                         num_particles=args.num_particles, lr=args.lr, lr_final=args.lr_final, batch_size=args.batch_size,
                         epochs=args.epochs, seed=args.seed, cuda=args.cuda, out=args.out, threads=args.threads,
                         checkpoint_every=max(1, args.epochs // 10))
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    run = train(config, progress=False, log=log)
    out, metrics, vae, dataset, device = run.path, run.metrics, run.vae, run.dataset, run.device
    test = dataset.test[: args.eval_images]
    tic = time.perf_counter()
    estimate = evaluate.log_likelihood(vae, test, args.eval_samples)
    rows = [dict(model="pyro-vae", estimator=args.estimator, k=args.num_particles, epochs=args.epochs,
                 batch=args.batch_size, test_log_likelihood=estimate.value, standard_error=estimate.standard_error,
                 test_elbo=-metrics[-1]["test_loss"], train_seconds=sum(m["seconds"] for m in metrics),
                 eval_seconds=time.perf_counter() - tic, eval_samples=args.eval_samples, images=test.shape[0], run=str(out),
                 **estimate.diagnostics())]

    if args.reference:
        pyro.set_rng_seed(args.seed)  # as train() does, so VAE(...) below has the Pyro run's initial weights
        initial = VAE(ARCHITECTURE)
        plain = PlainVAE(hidden=ARCHITECTURE.hidden, z_dim=ARCHITECTURE.z_dim, activation=ARCHITECTURE.activation)
        plain = plain.copy_from(initial).to(device)
        objective = {"trace": "monte-carlo", "meanfield": "analytic-kl", "iwae": "iwae"}[args.estimator]
        records = train_plain(plain, dataset, args.epochs, args.batch_size, args.lr, args.lr_final,
                              objective=objective, k=args.num_particles, log=log)
        plain.eval()
        tic = time.perf_counter()
        value = log_likelihood(plain, test, args.eval_samples)
        rows.append(dict(model="plain PyTorch", estimator=args.estimator, k=args.num_particles, epochs=args.epochs,
                         batch=args.batch_size, test_log_likelihood=value, standard_error=None,
                         test_elbo=-records[-1]["test_loss"], train_seconds=sum(r["seconds"] for r in records),
                         eval_seconds=time.perf_counter() - tic, eval_samples=args.eval_samples, images=test.shape[0]))

    paper = PAPER.get((args.estimator, args.num_particles))
    name = {"trace": "VAE", "meanfield": "VAE (exact KL)", "iwae": "IWAE"}[args.estimator]
    print("| model | objective | epochs, batch | test log p(x) (K) | test ELBO | paper | gap to paper | train s | eval s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        se = "" if row["standard_error"] is None else f" ± {row['standard_error']:.3f}"
        gap = "" if paper is None else f"{row['test_log_likelihood'] - paper:+.2f}"
        print(f"| {row['model']} | {name} k={row['k']} | {row['epochs']}, {row['batch']} | {row['test_log_likelihood']:.2f}{se} "
              f"({row['eval_samples']}) | {row['test_elbo']:.2f} | {paper if paper is not None else 'n/a'} | {gap} | "
              f"{row['train_seconds']:.0f} | {row['eval_seconds']:.0f} |")
    diagnostics = rows[0]
    print(f"\npyro-vae's estimate: effective sample size {diagnostics['effective_sample_size_min']:.1f} to "
          f"{diagnostics['effective_sample_size_median']:.1f} (minimum, median) of K = {args.eval_samples}; Pareto k-hat at "
          f"most {diagnostics['pareto_k_max']:.2f}, above 0.7 for {diagnostics['pareto_k_above_0_7']} of {test.shape[0]} images")
    (out / "reproduce_iwae.json").write_text(json.dumps(dict(argv=sys.argv, rows=rows, paper=paper), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
