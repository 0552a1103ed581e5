"""What the batch's dynamic binarization costs a training step on this CPU: `torch.bernoulli(x)`, the eager
step's draw (`pyro_vae.data.binarize`: `torch.rand(x.shape) < x`, the same draw, bit for bit) and the compiled
step's (`pyro_vae.data.threefry`, one fused kernel)
against the encoder's first GEMM, on a 256 x 784 batch; then MNIST epochs of the default VAE (batch 256),
eager or `--compile`, with `torch.bernoulli` and with that step's own draw, in turn.

    taskset -c 0 python benchmarks/binarization_draw.py --data-dir DATA_DIR --threads 1 [--compile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Callable

import torch

import pyro_vae
from pyro_vae import data


def milliseconds(f: Callable[[], object], calls: int = 300) -> float:
    for _ in range(20):
        f()
    tic = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - tic) / calls * 1e3


def epoch_seconds(data_dir: str | None, epochs: int, compile: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        config = pyro_vae.TrainConfig(dataset="mnist" if data_dir else "default", data_dir=data_dir, validation=0,
                                      epochs=epochs, batch_size=256, out=f"{out}/run", checkpoint_every=epochs,
                                      compile=compile)  # fmt: skip
        run = pyro_vae.train(config, progress=False, log=lambda line: None)
        return [round(record["seconds"], 2) for record in run.metrics]


def torch_draw(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.bernoulli(x, generator=generator)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the offline 4,000 digits)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="epochs with each draw (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="runs with each draw, taking turns (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="time the compiled step's epochs (default: eager)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, weight = torch.rand(256, 784), torch.randn(400, 784)
    print(f"| 256 x 784 batch, {args.threads} thread(s) | ms |\n|---|---:|")
    print(
        f"| linear 784 -> 400 (the encoder's first GEMM) | {milliseconds(lambda: torch.nn.functional.linear(x, weight)):.3f} |"
    )
    print(f"| torch.bernoulli(x) | {milliseconds(lambda: torch.bernoulli(x)):.3f} |")
    print(f"| the eager step's draw (rand < x) | {milliseconds(lambda: data.binarize(x)):.3f} |")
    print(f"| the compiled step's draw (threefry, fused) | {milliseconds(lambda: data.binarize_fused(x)):.3f} |")
    kind, own = (
        ("compiled", ("threefry", data.binarize_fused)) if args.compile else ("eager", ("rand < x", data.binarize))
    )
    for _ in range(args.rounds):
        for name, draw in (("torch.bernoulli", torch_draw), own):
            data.binarize = data.binarize_fused = draw  # the training step's draw, for this run
            print(f"{kind} epochs with {name}: {epoch_seconds(args.data_dir, args.epochs, args.compile)} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
