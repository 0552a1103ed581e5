"""The peers side by side: pyro-vae (eager and compiled), plain PyTorch and NumPyro train the same VAE
(784-400-50, softplus, Bernoulli likelihood, dynamically binarized), on the same images, batch and Adam, each
in a process of its own, the contenders taking turns round after round so that a slow spell of a shared
machine hits them all.

    python benchmarks/peers.py --data-dir DATA_DIR --threads 1 --epochs 4 --rounds 2     # MNIST's 60,000
    taskset -c 0 python benchmarks/peers.py ...                                          # pin to one core

NumPyro's VAE is written as its `examples/vae.py` writes it (SVI with Trace_ELBO, stax networks, the epoch
jitted with `lax.fori_loop`); it needs the peers extra (`pip install -e ".[peers]"`), and is skipped with a
message without it. An epoch's seconds are its training steps only (for pyro-vae, the `seconds` of its
metrics.jsonl: no evaluation, no checkpoint); the first epoch (compilation, warm-up) is left out of the median.
Prints a markdown table: median epoch seconds per contender and the ratio to NumPyro's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ("pyro-vae eager", "pyro-vae compiled", "plain PyTorch", "NumPyro")
HIDDEN, Z, BATCH, LR = 400, 50, 256, 1e-3


def images(data_dir: str | None):
    """The training images as a float32 NumPy array: MNIST's 60,000 with a data folder, else the default 4,000."""
    from pyro_vae import data

    dataset = data.load_dataset("mnist" if data_dir else "default", data_dir)
    return dataset.train.numpy()


def pyro_vae_epochs(data_dir: str | None, epochs: int, compiled: bool, out: str) -> list[float]:
    import pyro_vae

    config = pyro_vae.TrainConfig(
        dataset="mnist" if data_dir else "default", data_dir=data_dir, validation=0, epochs=epochs,
        batch_size=BATCH, lr=LR, compile=compiled, out=out, checkpoint_every=epochs,
    )  # fmt: skip
    run = pyro_vae.train(config, progress=False, log=lambda line: None)
    return [record["seconds"] for record in run.metrics]


def plain_epochs(data_dir: str | None, epochs: int) -> list[float]:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from reference_vae import PlainVAE

    x = torch.from_numpy(images(data_dir))
    vae = PlainVAE(784, (HIDDEN,), Z, "softplus")
    optimizer = torch.optim.Adam(vae.parameters(), lr=LR, fused=True)
    seconds = []
    for _ in range(epochs):
        tic = time.perf_counter()
        for rows in torch.randperm(x.shape[0]).split(BATCH):
            optimizer.zero_grad(set_to_none=True)
            vae(torch.bernoulli(x[rows])).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - tic)
    return seconds


def numpyro_epochs(data_dir: str | None, epochs: int) -> list[float]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax.example_libraries import stax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import Adam

    encode_init, encode = stax.serial(
        stax.Dense(HIDDEN), stax.Softplus, stax.FanOut(2), stax.parallel(stax.Dense(Z), stax.serial(stax.Dense(Z), stax.Exp))
    )  # fmt: skip
    decode_init, decode = stax.serial(stax.Dense(HIDDEN), stax.Softplus, stax.Dense(784), stax.Sigmoid)

    def model(batch):
        decoder = numpyro.module("decoder", (decode_init, decode), (BATCH, Z))
        with numpyro.plate("batch", batch.shape[0]):
            z = numpyro.sample("z", dist.Normal(0, 1).expand([Z]).to_event(1))
            numpyro.sample("obs", dist.Bernoulli(decoder(z)).to_event(1), obs=batch)

    def guide(batch):
        encoder = numpyro.module("encoder", (encode_init, encode), (BATCH, 784))
        loc, scale = encoder(batch)
        with numpyro.plate("batch", batch.shape[0]):
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    x = jnp.asarray(images(data_dir))
    steps = x.shape[0] // BATCH
    svi = SVI(model, guide, Adam(LR), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), x[:BATCH])

    @jax.jit
    def epoch(state, key):
        order = jax.random.permutation(key, x.shape[0])

        def step(i, carry):
            state, key = carry
            key, draw = jax.random.split(key)
            rows = jax.lax.dynamic_slice_in_dim(order, i * BATCH, BATCH)
            batch = jax.random.bernoulli(draw, x[rows]).astype(jnp.float32)
            state, _ = svi.update(state, batch)
            return state, key

        return jax.lax.fori_loop(0, steps, step, (state, key))[0]

    seconds, key = [], jax.random.PRNGKey(1)
    for _ in range(epochs):
        key, use = jax.random.split(key)
        tic = time.perf_counter()
        state = jax.block_until_ready(epoch(state, use))
        seconds.append(time.perf_counter() - tic)
    return seconds


def contender(name: str, data_dir: str | None, epochs: int, threads: int) -> list[float]:
    """One contender's epoch seconds, in this process."""
    import torch

    torch.set_num_threads(threads)
    if name == "NumPyro":
        return numpyro_epochs(data_dir, epochs)
    if name == "plain PyTorch":
        return plain_epochs(data_dir, epochs)
    with tempfile.TemporaryDirectory() as out:
        return pyro_vae_epochs(data_dir, epochs, name.endswith("compiled"), str(Path(out) / "run"))


def run_contender(name: str, args: argparse.Namespace) -> list[float] | None:
    """A contender in a fresh process; None (with the reason printed) where it cannot run here."""
    command = [sys.executable, __file__, "--contender", name, "--epochs", str(args.epochs),
               "--threads", str(args.threads)] + (["--data-dir", args.data_dir] if args.data_dir else [])  # fmt: skip
    env = {"XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}",
           "OMP_NUM_THREADS": str(args.threads)}  # fmt: skip
    import os

    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"{name}: skipped ({reason[:200]})", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the offline 4,000 digits)")
    p.add_argument("--threads", type=int, default=1, help="threads of every contender (default: %(default)s)")
    p.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs per contender and round, the first left out (default: %(default)s)",
    )
    p.add_argument("--rounds", type=int, default=2, help="turns of every contender (default: %(default)s)")
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="(default: all)")
    p.add_argument("--contender", choices=CONTENDERS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.contender is not None:
        print(json.dumps(contender(args.contender, args.data_dir, args.epochs, args.threads)))
        return 0
    if args.epochs < 2 or args.rounds < 1 or args.threads < 1:
        p.error("--epochs must be at least 2 (the first is left out), --rounds and --threads at least 1")
    seconds: dict[str, list[float]] = {name: [] for name in args.contenders}
    for round_ in range(args.rounds):
        for name in args.contenders:
            epochs = run_contender(name, args)
            if epochs is not None:
                seconds[name] += epochs[1:]
                print(f"round {round_ + 1}, {name}: {', '.join(f'{s:.2f}' for s in epochs)} s", file=sys.stderr)
    medians = {name: statistics.median(s) for name, s in seconds.items() if s}
    reference = medians.get("NumPyro")
    print(f"| contender ({args.threads} thread(s), batch {BATCH}) | epoch s (median) | / NumPyro |\n|---|---:|---:|")
    for name, value in medians.items():
        ratio = f"{value / reference:.2f}" if reference else "n/a"
        print(f"| {name} | {value:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
