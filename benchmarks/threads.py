"""The first command's time with the default thread count and with each fixed count, on idle cores and with
other work beside it: --load N starts N busy processes (a Python loop each) before the runs and stops them
after. Each run is `python scripts/svi_train.py --no-progress` (10 epochs on the default data), timed from
start to exit; the thread count the default chose is read from its start line.

    python benchmarks/threads.py --load 0 1 --threads 1 2
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(threads: int | None, folder: Path, epochs: int) -> tuple[float, int]:
    """Seconds of one first command (with --threads `threads`, or the default) and the threads it used."""
    command = [sys.executable, "scripts/svi_train.py", "--no-progress", "--epochs", str(epochs), "--out", str(folder)]
    command += [] if threads is None else ["--threads", str(threads)]
    tic = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - tic
    return seconds, int(re.search(r"on \w+, (\d+) CPU thread", result.stderr).group(1))


def with_load(processes: int) -> list[subprocess.Popen]:
    """`processes` busy loops, given a second to show up in the machine's CPU time."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    time.sleep(1.0 if busy else 0.0)
    return busy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", type=int, nargs="+", default=[0, 1], help="busy processes beside the runs")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="fixed thread counts to compare")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10, help="epochs of each run (default: 10, the first command's)")
    args = p.parse_args()
    print("| busy processes | --threads | threads used | seconds | against --threads 1 |")
    print("|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for load in args.load:
            busy = with_load(load)
            try:
                times = {}
                for setting in [None, *args.threads]:
                    runs = [
                        timed_run(setting, Path(scratch) / f"l{load}-{setting}-{i}", args.epochs)
                        for i in range(args.repeats)
                    ]
                    times[setting] = (min(s for s, _ in runs), runs[0][1])
                for setting, (seconds, used) in times.items():
                    ratio = f"{seconds / times[1][0]:.2f}x" if 1 in times else ""
                    print(f"| {load} | {setting or 'default'} | {used} | {seconds:.1f} | {ratio} |", flush=True)
            finally:
                for process in busy:
                    process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
