"""Gradient signal-to-noise against the number of samples K, per estimator, for the encoder and the decoder.

At fixed weights and one batch of test images, R independent draws of each estimator's gradient give
SNR = ||E g|| / sqrt(tr Cov[g]) (`experiments.compare.gradient_statistics`, with 95% bootstrap intervals);
the slope of log SNR against log K is fitted by least squares, its interval from the same bootstraps. At
two points: the VAE at initialization and after --epochs of `trace` training. Rainforth et al. (2018):
IWAE's encoder SNR falls like K^(-1/2) while its decoder's rises like K^(1/2); DReG's encoder SNR does not
fall; averaging K ELBO samples (`trace`, `stl`) raises both like K^(1/2); M copies (`miwae`, `piwae`,
`--copies`) raise the encoder's SNR like M^(1/2) at each K.

    python benchmarks/gradient_snr.py --dataset mnist --data-dir DATA_DIR --threads 2 --out runs/snr

Writes snr.csv, slopes.csv, report.md and snr.png to --out, and prints the report.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pyro
import torch

import pyro_vae
from pyro_vae import files
from pyro_vae.data import DATASETS
from pyro_vae.evaluation import plots
from pyro_vae.experiments import compare


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


def measure(vae: pyro_vae.VAE, x: torch.Tensor, estimator: str, k: int, args: argparse.Namespace) -> dict:
    """SNR of the encoder's and the decoder's gradient (estimate and bootstrap samples) for one K (float64)."""
    copies = args.copies if estimator in ("miwae", "piwae") else 1
    draws = compare.gradient_draws(vae, estimator, x, args.draws, seed=args.seed + k, num_particles=k, copies=copies)
    counts = compare.resample_counts(args.draws, args.bootstrap, seed=99)
    return {group: compare.gradient_statistics(draws[group], counts)["snr"] for group in ("encoder", "decoder")}


def slope(ks: list[int], snr: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of log SNR on log K for every bootstrap row of snr (rows, len(ks))."""
    log_k = torch.tensor([math.log(k) for k in ks], dtype=torch.float64)
    centred = log_k - log_k.mean()
    log_snr = snr.clamp(min=1e-300).log()
    return ((log_snr - log_snr.mean(1, keepdim=True)) * centred).sum(1) / centred.pow(2).sum()


def run(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    models, x = snapshot_models(args)
    rows, slopes = [], []
    for where, vae in models.items():
        for estimator in args.estimators:
            label = f"{estimator} M={args.copies}" if estimator in ("miwae", "piwae") else estimator
            samples = {"encoder": [], "decoder": []}
            for k in args.ks:
                measured = measure(vae, x, estimator, k, args)
                row = dict(snapshot=where, estimator=label, K=k)
                for group, snr in measured.items():
                    samples[group].append(snr)
                    row[f"{group}_snr"], row[f"{group}_snr_low"], row[f"{group}_snr_high"] = compare.interval(snr)
                rows.append(row)
                print(f"{where:>22} {label:>6} K={k:<4} encoder SNR {row['encoder_snr']:.3g}  decoder SNR "
                      f"{row['decoder_snr']:.3g}", flush=True)  # fmt: skip
            fit = {g: compare.interval(slope(args.ks, torch.stack(s, dim=1))) for g, s in samples.items()}
            slopes.append(dict(snapshot=where, estimator=label, **{f"{g}_slope": v[0] for g, v in fit.items()},
                               **{f"{g}_slope_low": v[1] for g, v in fit.items()},
                               **{f"{g}_slope_high": v[2] for g, v in fit.items()}))  # fmt: skip
    return rows, slopes


def report(rows: list[dict], slopes: list[dict], args: argparse.Namespace) -> str:
    def ci(r: dict, key: str) -> str:
        return f"{r[key]:.3g} [{r[key + '_low']:.3g}, {r[key + '_high']:.3g}]"

    lines = ["| snapshot | estimator | K | encoder SNR | decoder SNR |", "|---|---|---:|---|---|"]
    lines += [
        f"| {r['snapshot']} | {r['estimator']} | {r['K']} | {ci(r, 'encoder_snr')} | {ci(r, 'decoder_snr')} |"
        for r in rows
    ]
    lines += ["", "| snapshot | estimator | slope of log encoder SNR on log K | decoder |", "|---|---|---|---|"]
    lines += [
        f"| {s['snapshot']} | {s['estimator']} | {ci(s, 'encoder_slope')} | {ci(s, 'decoder_slope')} |" for s in slopes
    ]
    header = (f"Gradient SNR on {args.batch} {args.dataset} test images, {args.draws} draws per point, 95% bootstrap "
              f"intervals ({args.bootstrap} resamples); `{' '.join(sys.argv)}`\n\n")  # fmt: skip
    return header + "\n".join(lines) + "\n"


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
    rows, slopes = run(args)
    files.write_csv(out / "snr.csv", rows)
    files.write_csv(out / "slopes.csv", slopes)
    text = report(rows, slopes, args)
    (out / "report.md").write_text(text)
    plots.snr_against_k(rows, out / "snr.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
