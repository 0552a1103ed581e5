"""Throughput of a Pyro SVI step against a plain-PyTorch VAE step, an MNIST epoch against the reference
epoch, and the importance-sampled log p(x) against a plain-PyTorch estimator of the same quantity.

A step is forward, backward and an Adam step on one batch already on the device. The Pyro VAE is this
project's (`pyro_vae.core.model.VAE` with the loss and optimizer of `training.objective.make_objective`, exactly what training runs); the
reference is `reference_vae.PlainVAE` with the same layers, initialization scheme, optimizer and batch. All
contenders are interleaved: every repetition runs each of them in turn, so a slow spell of a shared
machine hits them all; the table gives the median over repetitions, [min, max], images per second, and the
ratio of medians to the reference measured in the same run.

    python benchmarks/throughput.py                                   # steps, CPU, batch 128/256/1024
    python benchmarks/throughput.py --epoch --eval --data-dir DATA_DIR
    python benchmarks/throughput.py --cuda --epoch --eval --data-dir DATA_DIR
    python benchmarks/throughput.py --compile --estimators trace meanfield iwae --epoch --data-dir DATA_DIR

With --compile, two more kinds of contender: the Pyro loss traced into a graph and compiled (`--compile` of
training, `pyro_vae.core.compiled`, by --compile-backend: inductor's kernels by default) and the plain loss
traced and compiled by the same functions, each compared with the plain eager step; the Pyro compiled step
also with the plain compiled one ("ratio to plain compiled").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_vae import PlainVAE, Recipe  # noqa: E402
from reference_vae import log_likelihood as plain_log_likelihood
from reference_vae import train as train_plain

from pyro_vae import data  # noqa: E402
from pyro_vae.core.compiled import BACKENDS, NOT_TRACEABLE, compiled_kernels, traced  # noqa: E402
from pyro_vae.core.estimators import IMPORTANCE_WEIGHTED  # noqa: E402
from pyro_vae.core.model import VAE  # noqa: E402
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.evaluation import likelihood as evaluate  # noqa: E402
from pyro_vae.training.config import TrainConfig  # noqa: E402
from pyro_vae.training.inputs import load_training_data  # noqa: E402
from pyro_vae.training.loop import train  # noqa: E402
from pyro_vae.training.objective import make_objective  # noqa: E402
from pyro_vae.training.step import Batch, svi_step  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(
    contenders: dict[str, Callable[[], None]], calls: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each contender, `repeats` times, the contenders taking turns within each repeat."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            synchronize(device)
            tic = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            times[name].append((time.perf_counter() - tic) / calls)
    return times


def peak_mib(contenders: dict[str, Callable[[], None]], device: torch.device) -> dict[str, float]:
    """On CUDA, each contender's peak of allocated GPU memory over one call, in MiB (none on the CPU)."""
    peak = {}
    if device.type == "cuda":
        for name, fn in contenders.items():
            synchronize(device)
            torch.cuda.reset_peak_memory_stats()
            fn()
            synchronize(device)
            peak[name] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def summarize(times: dict[str, list[float]], reference: dict[str, str], images: int, **extra) -> list[dict]:
    medians = {name: statistics.median(t) for name, t in times.items()}
    return [
        dict(
            **extra,
            contender=name,
            ms=1000 * medians[name],
            ms_min=1000 * min(t),
            ms_max=1000 * max(t),
            images_per_second=images / medians[name],
            reference=reference[name],
            ratio=medians[name] / medians[reference[name]],
        )
        for name, t in times.items()
    ]


class PlainIWAELoss(torch.nn.Module):
    """The plain VAE's IWAE loss as a module's forward, so that it can be traced with its parameters."""

    def __init__(self, plain: PlainVAE, particles: int):
        super().__init__()
        self.plain, self.particles = plain, particles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain.iwae_loss(x, self.particles)


def compiled_plain(loss: torch.nn.Module, x: torch.Tensor, backend: str) -> Callable:
    """A plain loss module traced and compiled exactly as `--compile` does Pyro's (`core.compiled`)."""
    state = dict(loss.named_parameters())
    graph = traced(loss, state, x)
    if backend == "inductor":
        graph = compiled_kernels(graph, state, x)
    return lambda x: graph(state, x)


def step_contenders(config: ModelConfig, args, x: torch.Tensor) -> tuple[dict, dict, dict]:
    """One closure per contender doing one training step on x; the reference each is compared with; and
    for the compiled Pyro steps, the plain compiled step too."""
    device, particles = x.device, args.iwae_particles

    def adam(module: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(module.parameters(), lr=1e-3, fused=args.fused)

    contenders, reference, compiled_reference = {}, {}, {}
    plain_kinds = [(False, "elbo"), (False, "iwae")] + ([(True, "elbo"), (True, "iwae")] if args.compile else [])
    for compiled, objective in plain_kinds:
        if objective == "iwae" and not set(args.estimators) & set(IMPORTANCE_WEIGHTED):
            continue
        torch.manual_seed(0)
        plain = PlainVAE(config.x_dim, config.hidden, config.z_dim, config.activation).to(device)
        optimizer = adam(plain)
        eager = plain if objective == "elbo" else PlainIWAELoss(plain, particles)
        loss = compiled_plain(eager, x, args.compile_backend) if compiled else eager

        def plain_step(loss=loss, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss(x).backward()
            optimizer.step()

        name = (
            "plain PyTorch"
            + (f" iwae k={particles}" if objective == "iwae" else "")
            + (" compiled" if compiled else "")
        )
        contenders[name], reference[name] = plain_step, "plain PyTorch"
    variants = [(estimator, False, False) for estimator in args.estimators]
    variants += [("trace", True, False)] if args.validated else []
    variants += [
        (estimator, False, True) for estimator in args.estimators if args.compile and estimator not in NOT_TRACEABLE
    ]
    for estimator, every_step, compiled in variants:
        pyro.set_rng_seed(0)
        vae = VAE(config).to(device)
        k = particles if estimator in IMPORTANCE_WEIGHTED else 1
        training = TrainConfig(
            model=config, estimator=estimator, num_particles=k, validate_every_step=every_step, compile=compiled,
            **({"compile_backend": args.compile_backend} if compiled else {}),
        )  # fmt: skip
        loss, optimizer = make_objective(training, vae)  # exactly what training builds
        optimizer = optimizer if args.fused else adam(vae)  # Adam as the plain contenders have it

        def pyro_step(loss=loss, optimizer=optimizer) -> None:
            svi_step(loss, optimizer, Batch(x))  # the training step, its finite check included

        name = f"pyro {estimator}" + (f" k={k}" if k > 1 else "") + (" validated every step" if every_step else "")
        name += " compiled" if compiled else ""
        plain_name = f"plain PyTorch iwae k={particles}" if k > 1 else "plain PyTorch"
        contenders[name], reference[name] = pyro_step, plain_name
        if compiled:
            compiled_reference[name] = plain_name + " compiled"
    return contenders, reference, compiled_reference


def bench_steps(args, device: torch.device) -> Iterator[list[dict]]:
    """Each batch size's rows, as each is measured."""
    config = ModelConfig()
    pool = data.prepare(data.load_dataset("default"), "static").train.to(device)
    for batch in args.batch_sizes:
        x = pool[torch.arange(batch) % pool.shape[0]]
        contenders, reference, compiled_reference = step_contenders(config, args, x)
        tic = time.perf_counter()
        interleaved(contenders, 3, 1, device)  # warm-up, JIT compilation and tracing included
        print(
            f"batch {batch}: warm-up (compilation and tracing included) {time.perf_counter() - tic:.1f} s", flush=True
        )
        peak = peak_mib(contenders, device)
        times = interleaved(contenders, args.steps, args.repeats, device)
        batch_rows = summarize(times, reference, batch, kind="step", batch=batch)
        medians = {row["contender"]: row["ms"] for row in batch_rows}
        for row in batch_rows:
            row["peak_mib"] = peak.get(row["contender"])
            if row["contender"] in compiled_reference:
                row["ratio_to_plain_compiled"] = row["ms"] / medians[compiled_reference[row["contender"]]]
        yield batch_rows


def sections(args, device: torch.device) -> Iterator[list[dict]]:
    """The rows of each measurement asked for, one section at a time."""
    yield from bench_steps(args, device)
    if args.epoch:
        yield bench_epoch(args, device)
    if args.eval:
        yield bench_eval(args, device)


def bench_epoch(args, device: torch.device) -> list[dict]:
    """One MNIST epoch of `pyro_vae.train.train` (batch 256, trace) against `reference_vae.train`, data
    path included (indexing the on-device tensor, dynamic binarization); the epoch's loop seconds. With
    --compile also `train` with `compile=True`, timed on its second epoch (the first includes the tracing)."""
    config = TrainConfig(
        dataset="mnist", data_dir=args.data_dir, validation=0, epochs=1, cuda=device.type == "cuda", checkpoint_every=1
    )
    dataset = load_training_data(config, device)
    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="epochs-", dir=args.scratch))  # fresh each time: a rerun never collides
    times: dict[str, list[float]] = {"plain PyTorch": [], "pyro trace": []}
    times.update({"pyro trace compiled": []} if args.compile else {})
    for repeat in range(args.epoch_repeats):
        torch.manual_seed(repeat)
        plain = PlainVAE().to(device)
        times["plain PyTorch"].append(
            train_plain(plain, dataset, Recipe(1, 256, lambda epoch: 1e-3), log=lambda line: None)[0]["seconds"]
        )
        run = train(
            replace(config, out=str(scratch / f"epoch-{repeat}"), seed=repeat),
            progress=False,
            log=lambda line: None,
        )
        times["pyro trace"].append(run.metrics[-1]["seconds"])
        if args.compile:
            compiled = replace(config, out=str(scratch / f"epoch-{repeat}-compiled"), seed=repeat)
            compiled = replace(compiled, compile=True, compile_backend=args.compile_backend, epochs=2)
            run = train(compiled, progress=False, log=lambda line: None)
            times["pyro trace compiled"].append(run.metrics[-1]["seconds"])
    n = dataset.train.shape[0]
    return summarize(times, {name: "plain PyTorch" for name in times}, n, kind="mnist epoch", batch=256)


def bench_eval(args, device: torch.device) -> list[dict]:
    """log p(x) with K samples on the MNIST test images: `pyro_vae.evaluate.log_likelihood` against
    `reference_vae.log_likelihood`, both chunked at `max_rows` (image, sample) pairs."""
    dataset = load_training_data(TrainConfig(dataset="mnist", data_dir=args.data_dir, validation=0), device)
    x = dataset.test[: args.eval_images]
    pyro.set_rng_seed(0)
    vae = VAE(ModelConfig()).to(device).eval()
    torch.manual_seed(0)
    plain = PlainVAE().to(device).eval()
    contenders = {
        "plain PyTorch": lambda: plain_log_likelihood(plain, x, args.eval_samples, max_rows=args.max_rows),
        "pyro-vae evaluate": lambda: evaluate.log_likelihood(vae, x, args.eval_samples, max_rows=args.max_rows),
    }
    peak = peak_mib(contenders, device)
    times = interleaved(contenders, 1, args.eval_repeats, device)
    rows = summarize(
        times,
        {name: "plain PyTorch" for name in contenders},
        x.shape[0],
        kind="log p(x) eval",
        batch=f"{x.shape[0]} images x K={args.eval_samples}",
    )
    for row in rows:
        row["peak_mib"] = peak.get(row["contender"])
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| what | batch | contender | ms (median) | [min, max] | images/s | ratio to reference | ratio to plain compiled "
        "| peak MiB |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        compiled = f"{r['ratio_to_plain_compiled']:.3f}" if "ratio_to_plain_compiled" in r else ""
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else ""
        lines.append(
            f"| {r['kind']} | {r['batch']} | {r['contender']} | {r['ms']:.2f} | [{r['ms_min']:.2f}, {r['ms_max']:.2f}] "
            f"| {r['images_per_second']:.0f} | {r['ratio']:.3f} (vs {r['reference']}) | {compiled} | {peak} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 1024])
    p.add_argument("--estimators", nargs="+", default=["trace", "meanfield", "jit-trace", "jit-meanfield", "iwae"])
    p.add_argument("--iwae-particles", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="steps per contender per repetition (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="repetitions (default: %(default)s)")
    p.add_argument(
        "--fused",
        choices=("default", "fused", "for-loop"),
        default="fused",
        help="Adam implementation for every contender alike; training uses fused (default: %(default)s)",
    )
    p.add_argument(
        "--validated",
        action="store_true",
        help="add a contender running Pyro's validation on every step (--validate-every-step)",
    )
    p.add_argument("--compile", action="store_true", help="also the traced and compiled Pyro and plain steps")
    p.add_argument("--compile-backend", choices=BACKENDS, default="inductor", help="(default: %(default)s)")
    p.add_argument("--epoch", action="store_true", help="also time MNIST epochs (needs --data-dir)")
    p.add_argument("--epoch-repeats", type=int, default=3)
    p.add_argument("--eval", action="store_true", help="also time the importance-sampled log p(x) (needs --data-dir)")
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--eval-images", type=int, default=10_000)
    p.add_argument("--eval-repeats", type=int, default=3)
    p.add_argument("--max-rows", type=int, default=65_536)
    p.add_argument("--data-dir", default=None, help=f"folder holding MNIST/raw (default: ${data.DATA_DIR_ENV})")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--json", default=None, help="write every row and the machine description here")
    p.add_argument("--scratch", default="runs/throughput", help="folder for the epoch runs' outputs")
    args = p.parse_args()
    args.fused = {"default": None, "fused": True, "for-loop": False}[args.fused]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cuda and not torch.cuda.is_available():
        print("error: --cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.cuda else "cpu")
    machine = dict(
        device=torch.cuda.get_device_name(0) if args.cuda else platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        pyro=pyro.__version__,
        argv=sys.argv,
    )
    rows = []
    for section in sections(args, device):  # each printed and saved as it comes: a run cut short keeps them
        rows += section
        print(markdown(section), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(dict(machine=machine, rows=rows), indent=2))
    print(f"\n{machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
