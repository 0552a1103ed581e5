"""The GEMMs of the training step on each route PyTorch offers on this CPU, measured, not assumed.

For the default VAE (784-400-50 softplus) at batch B, a step multiplies: forward x W^T for each layer
(B x 784 by 784 x 400, B x 400 by 400 x 100, B x 50 by 50 x 400, B x 400 by 400 x 784), and in the backward
for each layer grad_W = g^T x, and grad_x = g W for every layer but the first (the images need no gradient):
11 products. Each route computes the same product in float32:

    mkl          torch.matmul (PyTorch's default CPU path: MKL's sgemm)
    linear       torch.nn.functional.linear (the layers' own call)
    onednn       torch.utils.mkldnn's linear on mkldnn tensors, the weight prepacked once (inference only:
                 no autograd through mkldnn tensors, so a training step cannot use it as it is)
    onednn-dense torch.ops.mkldnn._linear_pointwise on ordinary tensors (oneDNN without the layout change)

    python benchmarks/gemm_routes.py --threads 1 --batch 256      # one core; pin it with taskset -c 0

Prints one row per (product, route): milliseconds (median of --repeats rounds, routes interleaved in each
round so a slow spell hits them all), GFLOPS, and the ratio to mkl in the same run; then the GEMM floor: the
11 products' milliseconds summed per route, a step's multiplications alone, and that times the steps of an
epoch of --epoch-images images (MNIST's 60,000 by default), the time no epoch on that route can beat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pyro_vae.cli.startup import errors_said, starting_up  # noqa: E402

with starting_up():
    import torch
    from torch.utils import mkldnn as mkldnn_utils

    from pyro_vae.settings import whole_number


def products(batch: int) -> list[tuple[str, int, int, int]]:
    """(name, m, k, n) of each product m x k by k x n of a step of the default VAE at `batch`."""
    layers = [("encoder 784->400", 784, 400), ("encoder 400->100", 400, 100), ("decoder 50->400", 50, 400),
              ("decoder 400->784", 400, 784)]  # fmt: skip
    forward = [(f"{name} forward", batch, k, n) for name, k, n in layers]
    backward = [(f"{name} grad_W", n, batch, k) for name, k, n in layers]
    backward += [(f"{name} grad_x", batch, n, k) for name, k, n in layers[1:]]
    return forward + backward


def routes(m: int, k: int, n: int) -> dict:
    """One closure per route computing the m x k by k x n product (as a linear layer of k -> n inputs)."""
    x, weight = torch.randn(m, k), torch.randn(n, k)
    weight_t = weight.T.contiguous()
    layer = torch.nn.Linear(k, n, bias=False)
    layer.weight.data.copy_(weight)
    packed, x_mkldnn = mkldnn_utils.to_mkldnn(layer), x.to_mkldnn()
    return {
        "mkl": lambda: x @ weight_t,
        "linear": lambda: torch.nn.functional.linear(x, weight),
        "onednn": lambda: packed(x_mkldnn),
        "onednn-dense": lambda: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], ""),
    }


def measure(contenders: dict, calls: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each contender, interleaved within each round."""
    for run in contenders.values():
        for _ in range(3):
            run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            tic = time.perf_counter()
            for _ in range(calls):
                run()
            times[name].append((time.perf_counter() - tic) / calls * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--batch", type=int, default=256, help="images per step (default: %(default)s)")
    p.add_argument("--calls", type=int, default=20, help="calls per round (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="rounds (default: %(default)s)")
    p.add_argument("--epoch-images", type=int, default=60_000,
                   help="images of the epoch whose GEMM floor is printed (default: %(default)s, MNIST's)")  # fmt: skip
    args = p.parse_args()
    for name, value, high in (("--threads", args.threads, 4096), ("--batch", args.batch, 100_000),
                              ("--calls", args.calls, 100_000), ("--repeats", args.repeats, 1_000),
                              ("--epoch-images", args.epoch_images, 100_000_000)):  # fmt: skip
        whole_number(name, value, 1, high)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, float32")
    print("| product | m x k x n | route | ms | GFLOPS | / mkl |\n|---|---|---|---:|---:|---:|")
    step: dict[str, float] = {}
    for name, m, k, n in products(args.batch):
        times = measure(routes(m, k, n), args.calls, args.repeats)
        for route, ms in times.items():
            gflops = 2 * m * k * n / ms / 1e6
            print(f"| {name} | {m}x{k}x{n} | {route} | {ms:.3f} | {gflops:.0f} | {ms / times['mkl']:.2f} |", flush=True)
            step[route] = step.get(route, 0.0) + ms
    print(floor_table(step, args.batch, args.epoch_images))
    return 0


def floor_table(step: dict[str, float], batch: int, images: int) -> str:
    """The GEMM floor per route: a step's products summed (ms), and times the ceil(images / batch) steps of an
    epoch (s)."""
    steps = -(-images // batch)
    lines = [f"\n| route | a step's {len(products(batch))} products (ms) | an epoch's {steps:,} steps (s) |",
             "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {route} | {ms:.3f} | {ms * steps / 1e3:.2f} |" for route, ms in step.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(errors_said(main))
