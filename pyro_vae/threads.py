"""How many CPU threads PyTorch gets: the cores that are free, shared by this machine's processes.

PyTorch's own default is every core, which on a machine with other work running oversubscribes the cores
and can make an epoch several times slower than one thread would. The default here is the cores this
process may use (its CPU affinity), less those busy in the last tenth of a second (the machine's CPU time,
read twice from /proc/stat on Linux; the one-minute load average elsewhere), divided among the processes
that torchrun starts on this machine (LOCAL_WORLD_SIZE), and at least 1. `--threads N` overrides it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(interval: float = 0.1) -> float:
    """About how many of the machine's cores other work kept busy over the last `interval` seconds."""
    try:
        first = _cpu_times()
        time.sleep(interval)
        second = _cpu_times()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (1 - idle / total) if total > 0 else 0.0


def _cpu_times() -> tuple[int, int]:
    """(all CPU time, idle time, including waiting for I/O) since boot, in clock ticks, from /proc/stat."""
    fields = [int(v) for v in PROC_STAT.read_text().splitlines()[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def default_threads() -> int:
    """The free cores (usable less busy, rounded) shared among torchrun's processes on this machine, at least 1."""
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    free = usable_cores() - round(busy_cores())
    return max(1, free // processes)


def use_threads(requested: int | None) -> int:
    """Set PyTorch's thread count to `requested`, or to `default_threads()` without one; returns it."""
    threads = default_threads() if requested is None else requested
    torch.set_num_threads(threads)
    return threads
