"""M2's test accuracy over draws of its labels: one run of `scripts/svi_train.py --program m2` for each draw of
the kept labels (`--labels-seed D`), each in its own run folder OUT/draw-D, then a markdown table of the test
accuracy after chosen epochs, each run's training minutes (its epochs' seconds summed: a run paused by hand
counts its pauses) and median seconds an epoch, and the mean ± standard deviation over the draws after the
last epoch (Pyro's tutorial's rows, 0.9319 with 100 labels and 0.9582 with 3,000, are means over five draws)
and, where the runs hold out a labelled validation split (MNIST's 10,000), at each run's epoch of best
validation accuracy, whose test accuracy the tutorial's script reports beside the last epoch's.

    python benchmarks/m2_label_draws.py --data-dir DATA_DIR --labels 3000 --out runs/m2-3000 --threads 1 \\
        -- --lr 0.0042 --adam-beta1 0.9                     # docs/RESULTS.md's 3,000-label row, hours a draw
    python benchmarks/m2_label_draws.py --labels 100 --epochs 2 --out runs/m2-small   # the default digits

Every run is the tutorial's recipe (the label enumerated, the auxiliary loss, grey pixels, batch 200, the
labelled images in batches of their own; --per-batch K puts K of them into every batch instead); flags after
`--` go to each run's first start. The folders make it resumable: a draw whose run has finished --epochs
is read, not trained; one with a checkpoint short of them is resumed (`--resume`, with --threads); so a
stopped benchmark picks up where it was, and a longer --epochs continues finished runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from pyro_vae import files

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (1, 2, 3, 4, 7, 10, 20, 30, 40, 50)  # the epochs RESULTS.md's M2 tables show


def recipe(args: argparse.Namespace, draw: int, out: Path) -> list[str]:
    """The svi_train.py flags of one draw's first start."""
    layout = ["--labelled-per-batch", str(args.per_batch)] if args.per_batch else ["--labelled-batches"]
    data = ["--dataset", "mnist", "--data-dir", args.data_dir] if args.data_dir else []
    return [
        "--program", "m2", "--estimator", "enum", "--labels-kept", str(args.labels), "--labels-seed", str(draw),
        *layout, "--binarize", "none", *data, "--batch-size", "200", "--epochs", str(args.epochs),
        "--out", str(out), *args.extra,
    ]  # fmt: skip


def epochs_done(out: Path) -> int:
    """The last epoch a run folder's metrics.jsonl holds (0 for none)."""
    metrics = out / "metrics.jsonl"
    records = files.read_jsonl(metrics) if metrics.exists() else []
    return records[-1]["epoch"] if records else 0


def train(args: argparse.Namespace, draw: int, out: Path) -> None:
    """Bring one draw's run to --epochs: start it, resume it, or leave it as it is."""
    if out.exists() and not (out / "checkpoint.pt").exists():
        raise SystemExit(f"error: {out} exists without a checkpoint; move it away or finish it by hand")
    if out.exists() and epochs_done(out) >= args.epochs:
        return
    threads = ["--threads", str(args.threads)] if args.threads else []
    flags = ["--resume", str(out), "--epochs", str(args.epochs)] if out.exists() else recipe(args, draw, out)
    command = [sys.executable, "scripts/svi_train.py", *flags, *threads]
    print(f"draw {draw}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    if subprocess.run(command, cwd=ROOT, stdout=sys.stderr).returncode != 0:
        raise SystemExit(f"error: draw {draw}'s run failed; its folder {out} resumes where it stopped")
    if (done := epochs_done(out)) < args.epochs:
        raise SystemExit(f"error: draw {draw}'s run ended at epoch {done} of {args.epochs} (stopped early?)")


def table(args: argparse.Namespace) -> str:
    """The markdown table of the draws' test accuracy, and the lines of their mean ± sd after --epochs and,
    where the runs held out a validation split, at each run's best validation accuracy (the tutorial's choice)."""
    columns = [e for e in COLUMNS if e < args.epochs] + [args.epochs]
    runs = {d: {r["epoch"]: r for r in files.read_jsonl(args.out / f"draw-{d}" / "metrics.jsonl")} for d in args.draws}
    validated = all("validation_accuracy" in records[1] for records in runs.values())
    header = [*map(str, columns), *(["at best validation (epoch)"] if validated else []), "minutes", "s an epoch"]
    lines = [
        f"| {args.labels:,} labels, after epoch | " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * len(header),
    ]
    finals, chosen = [], []
    for draw, records in runs.items():
        cells = [f"{records[e]['test_accuracy']:.4f}" for e in columns]
        if validated:
            best = best_validation(records, args.epochs)
            chosen.append(best["test_accuracy"])
            cells.append(f"{best['test_accuracy']:.4f} ({best['epoch']})")
        seconds = [records[e]["seconds"] for e in range(1, args.epochs + 1)]
        timing = f" | {sum(seconds) / 60:.0f} | {statistics.median(seconds):.1f} |"
        lines.append(f"| draw {draw} | " + " | ".join(cells) + timing)
        finals.append(records[args.epochs]["test_accuracy"])
    lines.append("\n" + mean_line(f"test accuracy after epoch {args.epochs}", finals))
    if validated:
        lines.append(mean_line("test accuracy at each run's best validation accuracy", chosen))
    return "\n".join(lines)


def best_validation(records: dict[int, dict], epochs: int) -> dict:
    """The record of the first epoch up to `epochs` with the highest validation accuracy (Pyro's tutorial keeps
    the test accuracy of such an epoch: a later epoch replaces it only when strictly better)."""
    return max((records[e] for e in range(1, epochs + 1)), key=lambda r: (r["validation_accuracy"], -r["epoch"]))


def mean_line(what: str, values: list[float]) -> str:
    """'what: mean ± sd (N draws)'."""
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{what}: {statistics.mean(values):.4f}{spread} ({len(values)} draw{'s' if len(values) > 1 else ''})"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the offline 4,000 digits)")
    p.add_argument("--labels", type=int, default=100, help="labels kept (default: %(default)s)")
    p.add_argument("--draws", type=int, nargs="+", default=[1, 2, 3, 4, 5],
                   help="the label draws, each a --labels-seed (default: %(default)s)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=50, help="epochs of each run (default: %(default)s)")
    p.add_argument("--per-batch", type=int, default=0,
                   help="K labelled images in every batch (default: 0, the labelled images in batches of their own)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="CPU threads of each run (default: the free cores)")
    p.add_argument("--out", type=Path, required=True, help="the folder of the runs (OUT/draw-D), made if missing")
    p.add_argument("extra", nargs="*", help="after --: svi_train.py flags for each run's first start")
    args = p.parse_args()
    if min(args.labels, args.epochs) < 1 or min(args.draws) < 0 or args.per_batch < 0 or (args.threads or 1) < 1:
        p.error("--labels, --epochs and --threads must be at least 1, --draws and --per-batch at least 0")
    if len(set(args.draws)) != len(args.draws):
        p.error("--draws: each draw once")
    args.out.mkdir(parents=True, exist_ok=True)
    for draw in args.draws:
        train(args, draw, args.out / f"draw-{draw}")
    print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
