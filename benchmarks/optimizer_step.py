"""What the optimizer costs a training step on this CPU: the run's own optimizer (`training.optimizer.SVIOptimizer`,
fused Adam with its on-device skip) over the peers' VAE (784-400-50, the MLP and diagonal guide of
`benchmarks/peers.py`), its step and its fused kernel alone, against the memory traffic Adam cannot avoid:

    traffic = 7 x 4 bytes x parameters     (read the parameter, its gradient, m and v; write the parameter, m, v)

and one thread's copy rate on an array too large for the caches (read + write), for scale.

    taskset -c 0 python benchmarks/optimizer_step.py --threads 1
"""

from __future__ import annotations

import argparse

import torch
from gemm_routes import measure  # this folder's interleaved median timer

from pyro_vae import ModelConfig
from pyro_vae.core.model import VAE
from pyro_vae.training.optimizer import SVIOptimizer

ADAM_TRAFFIC = 7 * 4  # bytes a parameter per Adam step (float32): 4 reads, 3 writes


def adam_milliseconds(calls: int, rounds: int) -> tuple[int, float, float]:
    """(parameters, ms of SVIOptimizer's step, ms of its fused kernel alone) over the VAE's parameters."""
    parameters = list(VAE(ModelConfig(hidden=(400,), z_dim=50)).parameters())
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter) * 1e-3
    optimizer = SVIOptimizer(parameters, lr=1e-3)
    fine = torch.tensor(False)
    optimizer.step_unless(fine)  # Adam's state exists from here on
    state = [optimizer.dense.state[p] for p in parameters]
    group = optimizer.dense.param_groups[0]
    kernel = lambda: torch._fused_adam_(  # noqa: E731  the kernel SVIOptimizer's step calls, without its Python
        [p.data for p in parameters], [p.grad for p in parameters], [s["exp_avg"] for s in state],
        [s["exp_avg_sq"] for s in state], [], [s["step"] for s in state], amsgrad=False, lr=group["lr"],
        beta1=group["betas"][0], beta2=group["betas"][1], weight_decay=0.0, eps=group["eps"], maximize=False,
    )  # fmt: skip
    times = measure({"step": lambda: optimizer.step_unless(fine), "kernel": kernel}, calls, rounds)
    return sum(p.numel() for p in parameters), times["step"], times["kernel"]


def copy_rate(calls: int, rounds: int, megabytes: int = 64) -> float:
    """One copy's rate, GB/s of reads and writes, on float32 arrays of `megabytes` each."""
    source = torch.randn(megabytes * 2**18)
    target = torch.empty_like(source)
    milliseconds = measure({"copy": lambda: target.copy_(source)}, max(calls // 10, 1), rounds)["copy"]
    return 2 * source.numel() * 4 / milliseconds / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--calls", type=int, default=50, help="steps a round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=15, help="rounds, the median taken (default: %(default)s)")
    args = p.parse_args()
    for name, value in (("--threads", args.threads), ("--calls", args.calls), ("--rounds", args.rounds)):
        if value < 1:
            p.error(f"{name} must be a whole number of at least 1, got {value}")
    torch.set_num_threads(args.threads)
    count, step, kernel = adam_milliseconds(args.calls, args.rounds)
    megabytes = ADAM_TRAFFIC * count / 1e6
    print(f"fused Adam over {count:,} parameters ({megabytes:.1f} MB of traffic a step), {args.threads} thread(s):")
    print(f"  SVIOptimizer step: {step:.3f} ms ({megabytes / step:.1f} GB/s)")
    print(f"  its fused kernel alone: {kernel:.3f} ms ({megabytes / kernel:.1f} GB/s); Python {step - kernel:.3f} ms")
    print(f"  copy of 64 MB arrays (past the caches): {copy_rate(args.calls, args.rounds):.1f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
