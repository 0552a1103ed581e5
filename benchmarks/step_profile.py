"""Where a training step's time goes: `torch.profiler`'s table of the default VAE's training steps (batch
256), eager or `--compile`, with inductor's kernels named one by one (`cpp.enable_kernel_profile`), so that
the GEMMs (`aten::mm`, `aten::addmm`), the fused kernels, the optimizer and the Python between them can be
read apart. The profiler opens at step --skip (after compilation and warm-up) and closes --steps later;
the table is sorted by self time, and the last line gives the milliseconds per step.

    taskset -c 0 python benchmarks/step_profile.py --data-dir DATA_DIR --threads 1 [--compile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch
import torch._inductor.config as inductor_config

import pyro_vae
from pyro_vae.cli.startup import errors_said
from pyro_vae.settings import whole_number
from pyro_vae.training import epoch as epoch_module


def profiled_steps(config: pyro_vae.TrainConfig, skip: int, steps: int) -> torch.profiler.profile:
    """Train as `config` says, the profiler open over steps skip + 1 .. skip + steps (the run's first epoch
    must hold them)."""
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    step, count = epoch_module.svi_step, [0]

    def svi_step(*args, **kwargs):
        count[0] += 1
        if count[0] == skip + 1:
            profiler.__enter__()
        result = step(*args, **kwargs)
        if count[0] == skip + steps:
            profiler.__exit__(None, None, None)
        return result

    epoch_module.svi_step = svi_step
    try:
        pyro_vae.train(config, progress=False, log=lambda line: None)
    finally:
        epoch_module.svi_step = step
    return profiler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the offline 4,000 digits)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="profile the compiled step (inductor)")
    p.add_argument("--skip", type=int, default=30, help="steps before the profiler opens (default: %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="steps profiled (default: %(default)s)")
    p.add_argument("--rows", type=int, default=25, help="rows of the table (default: %(default)s)")
    args = p.parse_args()
    images = 60_000 if args.data_dir else 4_000
    for name, value, low, high in (("--threads", args.threads, 1, 4096), ("--skip", args.skip, 0, 10_000),
                                   ("--steps", args.steps, 1, 10_000), ("--rows", args.rows, 1, 1_000)):  # fmt: skip
        whole_number(name, value, low, high)
    if args.skip + args.steps > images // 256:
        p.error(f"--skip + --steps must fit in the first epoch's {images // 256} full batches")
    inductor_config.cpp.enable_kernel_profile = True
    with tempfile.TemporaryDirectory() as out:
        config = pyro_vae.TrainConfig(
            dataset="mnist" if args.data_dir else "default", data_dir=args.data_dir, validation=0, epochs=1,
            batch_size=256, compile=args.compile, threads=args.threads, out=f"{out}/run", checkpoint_every=1,
        )  # fmt: skip
        profiler = profiled_steps(config, args.skip, args.steps)
    averages = profiler.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(event.self_cpu_time_total for event in averages) / 1e3
    print(f"{'compiled' if args.compile else 'eager'} step, batch 256, {args.threads} thread(s): "
          f"{total / args.steps:.2f} ms a step (profiler on), of which GEMMs "
          f"{gemm_milliseconds(averages) / args.steps:.2f} ms")  # fmt: skip
    return 0


def gemm_milliseconds(averages: object) -> float:
    """The self time of the matrix products (aten::mm, aten::addmm), in milliseconds."""
    return sum(event.self_cpu_time_total for event in averages if event.key in ("aten::mm", "aten::addmm")) / 1e3


if __name__ == "__main__":
    sys.exit(errors_said(main))
