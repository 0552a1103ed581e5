"""The peers side by side: pyro-vae (eager and compiled, with Trace_ELBO or TraceMeanField_ELBO), plain
PyTorch, pythae and NumPyro train the same VAE (784-400-50, softplus, Bernoulli likelihood, batch 256, Adam 1e-3)
on the same images, each in a process of its own, the contenders taking turns round after round so that a slow
spell of a shared machine hits them all; then each one's trained weights are scored by this project's
importance-sampled log p(x).

    python benchmarks/peers.py --data-dir DATA_DIR --threads 1 --epochs 4 --rounds 2     # MNIST's 60,000
    taskset -c 0 python benchmarks/peers.py ...                                          # pin to one core
    python benchmarks/peers.py --data-dir DATA_DIR --epochs 10 --rounds 1                 # log p(x) at 10 epochs

NumPyro's VAE is written as its `examples/vae.py` writes it (SVI with Trace_ELBO, stax networks, the epoch
jitted with `lax.fori_loop`), pythae's as its `VAE` with these networks and its `BaseTrainer` (its images
binarized once: its trainer reads fixed data; the others binarize every batch afresh); both need the peers
extra (`pip install -e ".[peers]"`), and are skipped with a message without it. An epoch's seconds are its
training steps only (for pyro-vae, the `seconds` of its metrics.jsonl: no evaluation, no checkpoint); the first
epoch (compilation, warm-up) is left out of the median. After the first round, each contender's weights are
mapped onto this project's VAE (`our_weights`: pythae's log-variance head halved to log sigma, stax's
matrices transposed; checked in tests/test_benchmarks.py) and scored on the first --images test images,
binarized once, with K = --samples. With --budget S, each contender then trains afresh for as many epochs as
its own timing says fit into S seconds (`budget_epochs`: its first epoch, compilation included, then its median
epoch), and is scored again: log p(x) at equal wall-clock, reckoned from the timed epochs so that a busy spell
during those long runs moves no contender's epoch count. Prints a markdown table: median epoch seconds per
contender, the ratio to NumPyro's, log p(x) after --epochs epochs, and with --budget the epochs and log p(x)
at equal time. The contender "GEMM floor" (in the default set) trains nothing: it multiplies, an epoch's steps
long, the 11 matrix products a training step of this VAE makes (`gemm_routes.py`'s, on PyTorch's default
path), taking its turn with the others; no epoch that makes them can be faster, and the table gives each
contender's ratio to it.

    python benchmarks/peers.py --data-dir DATA_DIR --threads 1 --epochs 10 --rounds 1 --budget 600
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = "GEMM floor"
CONTENDERS = ("pyro-vae eager", "pyro-vae compiled", "pyro-vae meanfield", "pyro-vae compiled meanfield", "plain PyTorch",
              "pythae", "NumPyro", FLOOR)  # fmt: skip
HIDDEN, Z, BATCH, LR = 400, 50, 256, 1e-3


def images(data_dir: str | None):
    """The training images as a float32 NumPy array: MNIST's 60,000 with a data folder, else the default 4,000."""
    from pyro_vae import data

    dataset = data.load_dataset("mnist" if data_dir else "default", data_dir)
    return dataset.train.numpy()


def pyro_vae_epochs(data_dir: str | None, epochs: int, name: str, out: str, seed: int) -> tuple[list[float], dict]:
    """pyro-vae's own training: eager or compiled, with the default `trace` (Trace_ELBO, the KL term by Monte
    Carlo) or `meanfield` (TraceMeanField_ELBO, the KL term in closed form, as plain PyTorch, pythae and most VAE
    code write it)."""
    import pyro_vae

    config = pyro_vae.TrainConfig(
        dataset="mnist" if data_dir else "default", data_dir=data_dir, validation=0, epochs=epochs,
        batch_size=BATCH, lr=LR, compile="compiled" in name, out=out, checkpoint_every=epochs,
        estimator="meanfield" if "meanfield" in name else "trace", seed=seed,
    )  # fmt: skip
    run = pyro_vae.train(config, progress=False, log=lambda line: None)
    return [record["seconds"] for record in run.metrics], run.vae.state_dict()


def plain_epochs(data_dir: str | None, epochs: int) -> tuple[list[float], dict]:
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
    return seconds, plain_weights(vae)


def floor_epochs(data_dir: str | None, epochs: int) -> tuple[list[float], dict]:
    """The seconds of an epoch's matrix products alone: for each batch of an epoch (the last one smaller), the 11
    products of a training step at its size (`gemm_routes.products`), float32, on random matrices; no weights."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gemm_routes import products

    count = images(data_dir).shape[0]
    sizes = [BATCH] * (count // BATCH) + ([count % BATCH] if count % BATCH else [])
    factors = {size: [(torch.randn(m, k), torch.randn(k, n)) for _, m, k, n in products(size)] for size in set(sizes)}
    seconds = []
    for _ in range(epochs):
        tic = time.perf_counter()
        for size in sizes:
            for a, b in factors[size]:
                torch.mm(a, b)
        seconds.append(time.perf_counter() - tic)
    return seconds, {}


def plain_weights(vae: object) -> dict:
    """The plain VAE's layers as this project's VAE's state (its encoder's head already gives (mu, log sigma))."""
    layers = [vae.enc[0], vae.enc[2], vae.dec[0], vae.dec[2]]
    return our_weights(*[(layer.weight.detach(), layer.bias.detach()) for layer in layers])


def numpyro_epochs(data_dir: str | None, epochs: int, seed: int) -> tuple[list[float], dict]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import Adam

    (encode_init, encode), (decode_init, decode) = numpyro_networks()

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
    state = svi.init(jax.random.PRNGKey(2 * seed), x[:BATCH])

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

    seconds, key = [], jax.random.PRNGKey(2 * seed + 1)
    for _ in range(epochs):
        key, use = jax.random.split(key)
        tic = time.perf_counter()
        state = jax.block_until_ready(epoch(state, use))
        seconds.append(time.perf_counter() - tic)
    params = svi.get_params(state)
    return seconds, numpyro_weights(params["encoder$params"], params["decoder$params"])


def numpyro_networks() -> tuple[tuple, tuple]:
    """NumPyro's example's stax networks, (init, apply) each: x -> (mu, sigma = exp(h)), z -> probabilities."""
    from jax.example_libraries import stax

    encoder = stax.serial(stax.Dense(HIDDEN), stax.Softplus, stax.FanOut(2),
                          stax.parallel(stax.Dense(Z), stax.serial(stax.Dense(Z), stax.Exp)))  # fmt: skip
    return encoder, stax.serial(stax.Dense(HIDDEN), stax.Softplus, stax.Dense(784), stax.Sigmoid)


def numpyro_weights(encoder: list, decoder: list) -> dict:
    """The stax networks' parameters as this project's VAE's state (the scale head's h is log sigma)."""
    hidden, _, _, (loc, (log_scale, _)) = encoder  # Dense, Softplus, FanOut, (Dense, (Dense, Exp))
    out_hidden, _, out, _ = decoder  # Dense, Softplus, Dense, Sigmoid
    return our_weights(*[stax_dense(layer) for layer in (hidden, (loc, log_scale), out_hidden, out)])


def stax_dense(layer: tuple) -> tuple:
    """A stax Dense's (W (in, out), b) as torch's (weight (out, in), bias); a pair of them stacked row-wise."""
    import numpy as np
    import torch

    if isinstance(layer[0], tuple):
        parts = [stax_dense(one) for one in layer]
        return torch.cat([w for w, _ in parts]), torch.cat([b for _, b in parts])
    weight, bias = layer
    return torch.from_numpy(np.asarray(weight).T.copy()), torch.from_numpy(np.asarray(bias).copy())


def pythae_epochs(data_dir: str | None, epochs: int, out: str) -> tuple[list[float], dict]:
    """pythae's `VAE` with these networks (`pythae_vae`), trained by its `BaseTrainer` through
    `TrainingPipeline` (Adam, no evaluation split, no checkpoints); an epoch's seconds are its trainer's, from
    epoch start to epoch end. pythae's trainer reads fixed images, so they are binarized once (the others draw
    a fresh binarization every batch)."""
    import torch
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class Clock(TrainingCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, training_config: object, **kwargs: object) -> None:
            self.tic = time.perf_counter()

        def on_epoch_end(self, training_config: object, **kwargs: object) -> None:
            self.seconds.append(time.perf_counter() - self.tic)

    x = torch.bernoulli(torch.from_numpy(images(data_dir)), generator=torch.Generator().manual_seed(0))
    model = pythae_vae()
    trainer = BaseTrainerConfig(output_dir=out, num_epochs=epochs, learning_rate=LR, per_device_train_batch_size=BATCH,
                                optimizer_cls="Adam", steps_saving=None, no_cuda=True)  # fmt: skip
    clock = Clock()
    TrainingPipeline(model=model, training_config=trainer)(train_data=x, callbacks=[clock])
    return clock.seconds, pythae_weights(model)


def pythae_vae() -> object:
    """pythae's `VAE` (BCE reconstruction loss) with these networks: its encoder gives (mu, log sigma^2), as
    pythae's models are written; its decoder the pixels' probabilities."""
    import torch
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from torch import nn

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Sequential(nn.Linear(784, HIDDEN), nn.Softplus())
            self.loc, self.log_var = nn.Linear(HIDDEN, Z), nn.Linear(HIDDEN, Z)

        def forward(self, x: torch.Tensor) -> ModelOutput:
            h = self.hidden(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=self.loc(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(Z, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, 784), nn.Sigmoid())

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=self.net(z))

    return VAE(VAEConfig(input_dim=(784,), latent_dim=Z, reconstruction_loss="bce"), Encoder(), Decoder())


def pythae_weights(model: object) -> dict:
    """pythae's VAE as this project's VAE's state: log sigma = log sigma^2 / 2, so its head's rows halved."""
    import torch

    encoder, decoder = model.encoder, model.decoder
    head = (
        torch.cat([encoder.loc.weight, encoder.log_var.weight / 2]),
        torch.cat([encoder.loc.bias, encoder.log_var.bias / 2]),
    )
    pairs = [(encoder.hidden[0].weight, encoder.hidden[0].bias), head, (decoder.net[0].weight, decoder.net[0].bias),
             (decoder.net[2].weight, decoder.net[2].bias)]  # fmt: skip
    return our_weights(*[(weight.detach(), bias.detach()) for weight, bias in pairs])


def our_weights(hidden: tuple, head: tuple, decoder_hidden: tuple, decoder_out: tuple) -> dict:
    """A peer's trained layers (weight, bias), torch's layout, as this project's VAE's state: the encoder's
    hidden layer, its head (mu's rows, then log sigma's), the decoder's hidden and output (logits) layers."""
    names = ("q.encoder.body.0", "q.encoder.head", "decoder.body.0", "decoder.head")
    pairs = zip(names, (hidden, head, decoder_hidden, decoder_out))
    return {f"{name}.{kind}": value.float() for name, pair in pairs for kind, value in zip(("weight", "bias"), pair)}


def contender(name: str, data_dir: str | None, epochs: int, threads: int, seed: int) -> tuple[list[float], dict]:
    """One contender's epoch seconds and trained weights (this project's VAE's state), in this process, its
    first weights and draws from `seed`."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if name == "NumPyro":
        return numpyro_epochs(data_dir, epochs, seed)
    if name == FLOOR:
        return floor_epochs(data_dir, epochs)
    if name == "plain PyTorch":
        return plain_epochs(data_dir, epochs)
    with tempfile.TemporaryDirectory() as out:
        if name == "pythae":
            return pythae_epochs(data_dir, epochs, out)
        return pyro_vae_epochs(data_dir, epochs, name, str(Path(out) / "run"), seed)


def budget_epochs(budget: float, seconds: list[float]) -> int:
    """The whole epochs that fit into `budget` seconds at a contender's timed pace: its first epoch (compilation
    and warm-up included), then one per median later epoch, at least one: 1 + floor((S - t_1) / median t)."""
    later = statistics.median(seconds[1:])
    return 1 + max(0, int((budget - seconds[0]) // later))


def run_contender(name: str, args: argparse.Namespace, weights: Path, epochs: int) -> list[float] | None:
    """A contender in a fresh process for `epochs` epochs, its weights saved to `weights`; None (with the
    reason printed) where it cannot run here."""
    command = [sys.executable, __file__, "--contender", name, "--epochs", str(epochs), "--threads",
               str(args.threads), "--weights", str(weights), "--seed", str(args.seed)] + (["--data-dir", args.data_dir] if args.data_dir else [])  # fmt: skip
    env = {"XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}",
           "OMP_NUM_THREADS": str(args.threads)}  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"{name}: skipped ({reason[:200]})", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def log_likelihood(weights: Path, data_dir: str | None, samples: int, images: int) -> tuple[float, float]:
    """log p(x) (and its standard error) of the first `images` test images, binarized once (seed 0), by this
    project's importance-sampling estimator with `samples` per image, of the VAE whose state is in `weights`."""
    import torch

    from pyro_vae import data
    from pyro_vae.core.model import VAE
    from pyro_vae.core.model_config import ModelConfig
    from pyro_vae.evaluation.likelihood import log_likelihood as estimate

    vae = VAE(ModelConfig(hidden=(HIDDEN,), z_dim=Z))
    vae.load_state_dict({**vae.state_dict(), **torch.load(weights, weights_only=True)})
    test = data.load_dataset("mnist" if data_dir else "default", data_dir).test[:images]
    x = torch.bernoulli(test, generator=torch.Generator().manual_seed(0))
    result = estimate(vae.eval(), x, samples, seed=0)
    return result.value, result.standard_error


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the offline 4,000 digits)")
    p.add_argument("--threads", type=int, default=1, help="threads of every contender (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs per contender and round, the first left out of the timing (default: %(default)s)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=2, help="turns of every contender (default: %(default)s)")
    p.add_argument("--samples", type=int, default=500,
                   help="K of the log p(x) estimate of each contender's weights after round 1; 0: none (default: %(default)s)")  # fmt: skip
    p.add_argument("--images", type=int, default=2000, help="test images of that estimate (default: %(default)s)")
    p.add_argument("--budget", type=float, default=0,
                   help="seconds of training each contender gets, reckoned from its timed epochs, then scored; 0: none (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=0, help="seed of every contender's first weights and draws (default: %(default)s)"
    )
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="(default: all)")
    p.add_argument("--contender", choices=CONTENDERS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.contender is not None:
        import torch

        seconds, weights = contender(args.contender, args.data_dir, args.epochs, args.threads, args.seed)
        torch.save(weights, args.weights)
        print(json.dumps(seconds))
        return 0
    if args.epochs < 2 or args.rounds < 1 or args.threads < 1 or args.samples < 0 or args.images < 1:
        p.error("--epochs must be at least 2 (the first is left out), --rounds, --threads and --images at least 1")
    if args.budget < 0 or (args.budget and not args.samples):
        p.error("--budget must be positive and needs --samples above 0 (it scores the contenders)")
    seconds: dict[str, list[float]] = {name: [] for name in args.contenders}
    quality: dict[str, tuple[float, float]] = {}
    timed: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name in args.contenders:
                weights = weights_file(Path(folder), name)
                epochs = run_contender(name, args, weights, args.epochs)
                if epochs is None:
                    continue
                seconds[name] += epochs[1:]
                print(f"round {round_ + 1}, {name}: {', '.join(f'{s:.2f}' for s in epochs)} s", file=sys.stderr)
                if round_ == 0 and name != FLOOR:  # the floor trains nothing: no weights to score
                    timed[name] = epochs
                    if args.samples:
                        quality[name] = log_likelihood(weights, args.data_dir, args.samples, args.images)
        budgeted = equal_time(timed, args, Path(folder)) if args.budget else {}
    print(table(seconds, quality, args, budgeted))
    return 0


def equal_time(timed: dict[str, list[float]], args: argparse.Namespace, folder: Path) -> dict[str, tuple]:
    """Each contender trained afresh for the epochs its round-1 timing fits into --budget seconds, then scored:
    {name: (epochs, (log p(x), standard error))}."""
    budgeted = {}
    for name, seconds in timed.items():
        weights, epochs = weights_file(folder, name, "-budget"), budget_epochs(args.budget, seconds)
        if run_contender(name, args, weights, epochs) is not None:
            budgeted[name] = (epochs, log_likelihood(weights, args.data_dir, args.samples, args.images))
            print(f"{args.budget:.0f} s, {name}: {epochs} epochs, log p(x) {budgeted[name][1][0]:.2f}", file=sys.stderr)
    return budgeted


def weights_file(folder: Path, name: str, suffix: str = "") -> Path:
    """Where a contender's trained weights are saved: its name, spaces as dashes, in `folder`."""
    return folder / f"{name.replace(' ', '-')}{suffix}.pt"


def table(seconds: dict[str, list[float]], quality: dict[str, tuple[float, float]], args: argparse.Namespace,
          budgeted: dict[str, tuple]) -> str:  # fmt: skip
    """The markdown table: median epoch seconds, the ratios to NumPyro's and to the GEMM floor's, and (with
    --samples) log p(x) after --epochs epochs; with --budget, the epochs that fit into it and log p(x) after them."""
    medians = {name: statistics.median(s) for name, s in seconds.items() if s}
    reference, floor = medians.get("NumPyro"), medians.get(FLOOR)
    about = f" log p(x) after {args.epochs} epochs (K = {args.samples}, first {args.images} test images) |"
    equal = f" epochs in {args.budget:.0f} s | log p(x) after them |"
    lines = [f"| contender ({args.threads} thread(s), batch {BATCH}) | epoch s (median) | / NumPyro | / {FLOOR} |"
             + (about if args.samples else "") + (equal if args.budget else ""),
             "|---|---:|---:|---:|" + ("---:|" if args.samples else "") + ("---:|---:|" if args.budget else "")]  # fmt: skip
    for name, value in medians.items():
        ratio = f"{value / reference:.2f}" if reference else "n/a"
        ratio += f" | {value / floor:.2f}" if floor else " | n/a"
        score = f" {score_text(quality.get(name))} |" if args.samples else ""
        if args.budget:
            epochs, budget_score = budgeted.get(name, ("", None))
            score += f" {epochs} | {score_text(budget_score)} |"
        lines.append(f"| {name} | {value:.2f} | {ratio} |{score}")
    return "\n".join(lines)


def score_text(score: tuple[float, float] | None) -> str:
    """A log p(x) estimate as 'value ± standard error', blank where there is none."""
    return f"{score[0]:.2f} ± {score[1]:.2f}" if score else ""


if __name__ == "__main__":
    sys.exit(main())
