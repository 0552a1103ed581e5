"""Quality against time, across runs: the log p(x) curves of benchmarks/reproduce_iwae.py runs in one figure,
with the training time each took to reach given log p(x) levels.

Each FOLDER is a reproduce_iwae.py output folder; every curve in its reproduce_iwae.json is read (or, while
a Pyro run is still training, its metrics.jsonl). The time to a level is the training seconds (evaluation
excluded) summed up to the first curve point at or above it, so it is known to the curve's spacing.

    python benchmarks/quality_curves.py runs/long-vae runs/long-vae-reference --out docs/figures/quality_curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_iwae import time_to  # noqa: E402

from pyro_vae import files  # noqa: E402
from pyro_vae.evaluation import plots  # noqa: E402


def curves_in(folder: Path) -> dict[str, list[dict]]:
    """The named epoch records of one reproduce_iwae.py folder."""
    report = folder / "reproduce_iwae.json"
    if report.exists():
        return json.loads(report.read_text())["curves"]
    return {"pyro-vae": files.read_jsonl(folder / "metrics.jsonl")}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER")
    p.add_argument(
        "--levels",
        nargs="+",
        type=float,
        default=[-90.0, -88.76, -86.76],
        help="log p(x) levels to time (default: -90, the paper's VAE figure + 2 nats, the paper's figure)",
    )
    p.add_argument("--out", type=Path, required=True, help="the figure (PNG)")
    args = p.parse_args()
    curves = {}
    for folder in args.folders:
        for name, records in curves_in(folder).items():
            curves[f"{name} ({folder.name})"] = records
    print("| run | " + " | ".join(f"time to {level}" for level in args.levels) + " | last point |")
    print("|---|" + "---:|" * (len(args.levels) + 1))
    for name, records in curves.items():
        hits = [time_to(records, level) for level in args.levels]
        cells = [
            "not reached" if hit is None else f"{hit['train_seconds'] / 60:.1f} min (epoch {hit['epoch']})"
            for hit in hits
        ]
        last = [r for r in records if "test_log_likelihood" in r][-1]
        print(f"| {name} | " + " | ".join(cells) + f" | {last['test_log_likelihood']:.2f} at epoch {last['epoch']} |")
    plots.quality_curves(
        curves,
        args.out,
        {f"log p(x) = {level}": level for level in args.levels},
        "log p(x) on each curve's test images (see its run's config: eval_images, eval_samples)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
