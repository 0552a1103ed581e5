"""Gradient signal-to-noise against the number of samples K, per estimator, for the encoder and the decoder.

At fixed weights and one batch of test images, R independent draws of each estimator's gradient give
SNR = ||E g|| / sqrt(tr Cov[g]) with 95% bootstrap intervals, and the slope of log SNR against log K
(`pyro_vae.experiments.gradient_snr`, which the estimators notebook uses too). At two points: the VAE at initialization and after --epochs of `trace` training. Rainforth et al. (2018):
IWAE's encoder SNR falls like K^(-1/2) while its decoder's rises like K^(1/2); DReG's encoder SNR does not
fall; averaging K ELBO samples (`trace`, `stl`) raises both like K^(1/2); M copies (`miwae`, `piwae`,
`--copies`) raise the encoder's SNR like M^(1/2) at each K.

    python benchmarks/gradient_snr.py --dataset mnist --data-dir DATA_DIR --threads 2 --out runs/snr

Writes snr.csv, slopes.csv, report.md and snr.png to --out, and prints the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyro
import torch

import pyro_vae
from pyro_vae import files
from pyro_vae.data import DATASETS
from pyro_vae.evaluation import plots
from pyro_vae.experiments import gradient_snr


def snapshot_models(args: argparse.Namespace) -> tuple[dict[str, pyro_vae.VAE], torch.Tensor]:
    """The VAE at initialization and after `args.epochs` epochs of trace (trained once, then read back from
    its run folder), and the first `args.batch` test images as training evaluates them."""
    folder = Path(args.out) / "trained-vae"
    if (folder / "summary.json").exists():
        run = pyro_vae.load_run(folder, data_dir=args.data_dir)
    else:
        config = pyro_vae.TrainConfig(
            dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, seed=args.seed, out=str(folder)
        )
        run = pyro_vae.train(config, progress=False)
    pyro.set_rng_seed(args.seed)
    fresh = pyro_vae.VAE(run.config.model)
    models = {"initialization": fresh, f"after {args.epochs} epochs": run.vae}
    return {k: m.double() for k, m in models.items()}, run.test_images()[: args.batch].double()


def report(rows: list[dict], slopes: list[dict], args: argparse.Namespace) -> str:
    header = (f"Gradient SNR on {args.batch} {args.dataset} test images, {args.draws} draws per point, 95% bootstrap "
              f"intervals ({args.bootstrap} resamples); `{' '.join(sys.argv)}`\n\n")  # fmt: skip
    return header + gradient_snr.markdown_tables(rows, slopes)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="default", choices=DATASETS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10, help="trace epochs before the second snapshot")
    p.add_argument("--estimators", nargs="+", default=["trace", "stl", "iwae", "dreg"])
    p.add_argument("--copies", type=int, default=1, help="M of miwae and piwae (default: 1)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 3, 10, 30, 100])
    p.add_argument("--draws", type=int, default=100, help="R, independent gradient draws per point")
    p.add_argument("--batch", type=int, default=100, help="test images in the batch")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/gradient-snr")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models, x = snapshot_models(args)
    rows, slopes = gradient_snr.snr_against_k(
        models, x, args.estimators, args.ks, args.draws, args.bootstrap, args.seed, args.copies, log=print
    )
    files.write_csv(out / "snr.csv", rows)
    files.write_csv(out / "slopes.csv", slopes)
    text = report(rows, slopes, args)
    (out / "report.md").write_text(text)
    plots.snr_against_k(rows, out / "snr.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
