"""Training throughput of data-parallel runs: 1, 2, ... processes under torchrun, against one process
using the same number of threads (cores) on its own.

Each contender is the real command, `torchrun --standalone --nproc-per-node P scripts/svi_train.py
--dataset mnist ... --threads T`, with the same global batch; the figure is the training images per second
(evaluation excluded) from the run's metrics.jsonl, the median over its epochs. Contenders take turns,
`--repeats` times, so a slow spell of a shared machine hits them all; the ratio is to 1 process of 1 thread
(on a GPU: 1 process on 1 GPU), measured in the same run.

    python benchmarks/data_parallel.py --data-dir DATA_DIR                      # CPU: 1 and 2 processes
    python benchmarks/data_parallel.py --data-dir DATA --cuda --processes 1 2 4 8     # a machine with 8 GPUs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pyro_vae import files

ROOT = Path(__file__).resolve().parents[1]


def images_per_second(processes: int, threads: int, args: argparse.Namespace, out: Path) -> float:
    """Median training images per second over the epochs of one run of P processes with T threads each."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(processes),
        "scripts/svi_train.py",
        "--dataset",
        "mnist",
        "--data-dir",
        args.data_dir,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(threads),
        "--no-progress",
        "--out",
        str(out),
    ]
    if args.cuda:
        command.append("--cuda")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    records = files.read_jsonl(out / "metrics.jsonl")
    return statistics.median(r["images_per_second"] for r in records)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="(default: 1 2)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="the global batch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="(default: %(default)s)")
    p.add_argument("--cuda", action="store_true", help="one GPU per process")
    args = p.parse_args()
    contenders = {f"{n} process{'es' if n > 1 else ''} x 1 thread": (n, 1) for n in args.processes}
    if not args.cuda:
        most = max(args.processes)
        contenders[f"1 process x {most} threads"] = (1, most)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for name, (processes, threads) in contenders.items():
                out = Path(scratch) / f"{processes}x{threads}-{repeat}"
                seconds[name].append(images_per_second(processes, threads, args, out))
                print(f"repeat {repeat + 1}: {name}: {seconds[name][-1]:.0f} images/s", file=sys.stderr, flush=True)
    reference = statistics.median(next(iter(seconds.values())))
    print(f"| contender | images/s (median of {args.repeats}) | [min, max] | ratio to 1 process x 1 thread |")
    print("|---|---:|---|---:|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | [{min(values):.0f}, {max(values):.0f}] | {median / reference:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
