"""What each ingredient of the IWAE paper's recipe buys, measured in short runs of benchmarks/reproduce_iwae.py.

Trains the paper's VAE (k = 1, Trace_ELBO) once per variant, each adding one ingredient or changing the batch,
with the same seed (--seed; another seed gives the spread), and reads each run's quality curve (log p(x) on the first --curve-images test images,
K = --curve-samples, every --curve-every epochs): the final point, the test ELBO and the training seconds,
in a markdown table and one figure of the curves against epochs and hours (recipe_study.png).

    python benchmarks/recipe_study.py --data-dir DATA_DIR --epochs 50 --threads 1 --out /tmp/recipe-study
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pyro_vae.evaluation import plots

HERE = Path(__file__).resolve().parent
# name -> the flags it adds to the baseline (batch 100, lr 1e-3 decaying geometrically to 1e-4, Adam's defaults)
VARIANTS = {
    "baseline": [],
    "+ output bias": ["--init-output-bias"],
    "+ output bias, Adam eps 1e-4": ["--init-output-bias", "--adam-eps", "1e-4"],
    "+ output bias, Adam eps 1e-4, paper schedule": ["--paper-recipe"],
    "+ output bias, Adam eps 1e-4, batch 500, lr 3e-3 to 3e-4": [
        "--init-output-bias",
        "--adam-eps",
        "1e-4",
        "--batch-size",
        "500",
        "--lr",
        "3e-3",
        "--lr-final",
        "3e-4",
    ],
    "+ output bias, Adam eps 1e-4, batch 1000, lr 1e-3 constant": [
        "--init-output-bias",
        "--adam-eps",
        "1e-4",
        "--batch-size",
        "1000",
        "--lr-final",
        "1e-3",
    ],
    "+ output bias, Adam eps 1e-4, KL warm-up 10 epochs": [
        "--init-output-bias",
        "--adam-eps",
        "1e-4",
        "--kl-warmup",
        "10",
    ],
}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--curve-every", type=int, default=10)
    p.add_argument("--curve-images", type=int, default=1000)
    p.add_argument("--curve-samples", type=int, default=1000)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="every variant's seed (default: %(default)s)")
    p.add_argument("--out", required=True, help="a folder for the runs (one subfolder each) and the figure")
    args = p.parse_args()
    out = Path(args.out)
    curves = {}
    print(
        f"| variant | flags | epochs | train s | test log p(x), {args.curve_images} images, K = {args.curve_samples} | test ELBO |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.variants:
        folder = out / f"variant-{list(VARIANTS).index(name)}"
        if not (folder / "reproduce_iwae.json").exists():  # a finished variant is read, not trained again
            command = [
                sys.executable,
                str(HERE / "reproduce_iwae.py"),
                "--epochs",
                str(args.epochs),
                "--eval-samples",
                "0",
                "--curve-every",
                str(args.curve_every),
                "--curve-images",
                str(args.curve_images),
                "--curve-samples",
                str(args.curve_samples),
                "--seed",
                str(args.seed),
                "--out",
                str(folder),
                *VARIANTS[name],
            ]
            command += [] if args.data_dir is None else ["--data-dir", args.data_dir]
            command += [] if args.threads is None else ["--threads", str(args.threads)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        records = json.loads((folder / "reproduce_iwae.json").read_text())["curves"]["pyro-vae"]
        curves[name] = records
        last = [r for r in records if "test_log_likelihood" in r][-1]
        print(
            f"| {name} | `{' '.join(VARIANTS[name]) or '(none)'}` | {last['epoch']} | {sum(r['seconds'] for r in records):.0f} | "
            f"{last['test_log_likelihood']:.2f} | {-records[-1]['test_loss']:.2f} |",
            flush=True,
        )
    plots.quality_curves(curves, out / "recipe_study.png", {})
    return 0


if __name__ == "__main__":
    sys.exit(main())
