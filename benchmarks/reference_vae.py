"""A plain-PyTorch VAE, the reference every figure of pyro-vae is compared against.

Same networks, data, batch, optimizer and binarization as `scripts/svi_train.py`, written the way
pytorch/examples writes a VAE: the negative ELBO as binary cross-entropy plus the closed-form KL, per
image, and (with k particles) the VAE-k or IWAE-k objective. No Pyro.

    python benchmarks/reference_vae.py --dataset mnist --data-dir DATA_DIR --epochs 10
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae import data

ACTIVATIONS = {"softplus": nn.Softplus, "tanh": nn.Tanh, "relu": nn.ReLU}


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class PlainVAE(nn.Module):
    def __init__(
        self, x_dim: int = 784, hidden: tuple[int, ...] = (400,), z_dim: int = 50, activation: str = "softplus"
    ):
        super().__init__()
        self.z_dim = z_dim
        self.enc = _mlp([x_dim, *hidden, 2 * z_dim], activation)
        self.dec = _mlp([z_dim, *reversed(hidden), x_dim], activation)

    @torch.no_grad()
    def copy_from(self, vae: nn.Module) -> "PlainVAE":
        """Take the weights of a `pyro_vae.core.model.VAE` of the same shape (diagonal guide), layer by layer, so both
        start from the same point."""
        pairs = [(self.enc, vae.q.encoder), (self.dec, vae.decoder)]
        for mine, theirs in pairs:
            ours = [m for m in mine.modules() if isinstance(m, nn.Linear)]
            others = [m for m in theirs.modules() if isinstance(m, nn.Linear)]
            if [m.weight.shape for m in ours] != [m.weight.shape for m in others]:
                raise ValueError("the two VAEs have different layer shapes")
            for a, b in zip(ours, others):
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)
        return self

    def log_weights(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps, eps of shape (k, batch, z)."""
        loc, log_scale = self.enc(x).chunk(2, -1)
        z = loc + log_scale.exp() * eps
        log_px_z = -F.binary_cross_entropy_with_logits(
            self.dec(z), x.expand(eps.shape[0], -1, -1), reduction="none"
        ).sum(-1)
        return log_px_z - 0.5 * z.pow(2).sum(-1) + 0.5 * eps.pow(2).sum(-1) + log_scale.sum(-1)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO per image: BCE(x, decoder(z)) + KL(N(mu, sigma^2) || N(0, I)), one sample."""
        loc, log_scale = self.enc(x).chunk(2, -1)
        scale = log_scale.exp()
        z = loc + scale * (torch.randn_like(loc) if eps is None else eps)
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = 0.5 * (scale.pow(2) + loc.pow(2) - 1 - 2 * log_scale).sum()
        return (rec + kl) / x.shape[0]

    def iwae_loss(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """-(1/B) sum_i log (1/k) sum_j w_ij, the IWAE-k objective."""
        log_w = self.log_weights(x, torch.randn(k, x.shape[0], self.z_dim, dtype=x.dtype, device=x.device))
        return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()

    def vae_k_loss(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """-(1/B) sum_i (1/k) sum_j log w_ij, the k-sample VAE objective (Monte Carlo KL, as Burda et al.)."""
        return -self.log_weights(x, torch.randn(k, x.shape[0], self.z_dim, dtype=x.dtype, device=x.device)).mean()


@torch.no_grad()
def test_loss(vae: PlainVAE, x: torch.Tensor, seed: int = 0) -> float:
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for chunk in x.split(2000):
        eps = torch.randn((chunk.shape[0], vae.z_dim), generator=g, device=x.device)
        total += vae(chunk, eps).item() * chunk.shape[0]
    return total / x.shape[0]


@torch.no_grad()
def log_likelihood(vae: PlainVAE, x: torch.Tensor, k: int, seed: int = 0, max_rows: int = 65_536) -> float:
    """Mean over images of log (1/k) sum_j w_j, z_j ~ q(z|x): the same estimator as
    `pyro_vae.evaluate.log_likelihood`, in chunks of at most max_rows (image, sample) pairs, float64 logsumexp."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    images = max(1, min(x.shape[0], max_rows // k))
    samples = max(1, min(k, max_rows // images))
    total = 0.0
    for chunk in x.split(images):
        log_w = torch.cat(
            [
                vae.log_weights(
                    chunk,
                    torch.randn(
                        (min(samples, k - s), chunk.shape[0], vae.z_dim), generator=g, device=x.device, dtype=x.dtype
                    ),
                ).double()
                for s in range(0, k, samples)
            ]
        )
        total += (torch.logsumexp(log_w, 0) - math.log(k)).sum().item()
    return total / x.shape[0]


@dataclass(frozen=True)
class Recipe:
    """How the plain model trains: Adam(betas=(adam_beta1, 0.999), eps=adam_eps) at learning_rate(epoch)
    (pass a TrainConfig's bound `learning_rate` to train on the Pyro run's schedule); every `curve_every`
    epochs (0: never) log p(x) on the first `curve_images` test images with `curve_samples` samples."""

    epochs: int
    batch_size: int
    learning_rate: Callable[[int], float]
    adam_beta1: float = 0.9
    adam_eps: float = 1e-8
    curve_every: int = 0
    curve_images: int | None = None
    curve_samples: int = 1000


def train(
    vae: PlainVAE,
    dataset: data.Dataset,
    recipe: Recipe,
    objective: str = "analytic-kl",
    k: int = 1,
    until: float | None = None,
    log=print,
) -> list[dict]:
    """Adam over dynamically binarized batches of a per-epoch permutation, as `recipe` says; stops early once
    the curve's log p(x) reaches `until`. objective: "analytic-kl" (the ELBO with the KL in closed form, as
    TraceMeanField_ELBO), "monte-carlo" (-mean_k log w_k, as Trace_ELBO with k particles) or "iwae"."""
    if objective not in ("analytic-kl", "monte-carlo", "iwae"):
        raise ValueError(f"unknown objective {objective!r}")
    opt = torch.optim.Adam(
        vae.parameters(),
        lr=recipe.learning_rate(0),
        fused=True,  # as pyro_vae.training.optimizer.SVIOptimizer
        betas=(recipe.adam_beta1, 0.999),
        eps=recipe.adam_eps,
    )
    n, records = dataset.train.shape[0], []
    for epoch in range(recipe.epochs):
        for group in opt.param_groups:
            group["lr"] = recipe.learning_rate(epoch)
        tic, total = time.perf_counter(), torch.zeros((), dtype=torch.float64, device=dataset.train.device)
        for idx in torch.randperm(n, device=dataset.train.device).split(recipe.batch_size):
            x = torch.bernoulli(data.pixels(dataset.train[idx]))  # 8-bit rows: / 255, as ours
            opt.zero_grad(set_to_none=True)
            if objective == "iwae":
                loss = vae.iwae_loss(x, k)
            elif objective == "monte-carlo":
                loss = vae.vae_k_loss(x, k)
            else:
                loss = vae(x)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        seconds = time.perf_counter() - tic
        record = dict(
            epoch=epoch + 1,
            train_loss=total.item() / n,
            test_loss=test_loss(vae, dataset.test),
            seconds=seconds,
            lr=recipe.learning_rate(epoch),
        )
        if recipe.curve_every and ((epoch + 1) % recipe.curve_every == 0 or epoch + 1 == recipe.epochs):
            record.update(
                test_log_likelihood=log_likelihood(vae, dataset.test[: recipe.curve_images], recipe.curve_samples),
                eval_samples=recipe.curve_samples,
                eval_images=dataset.test[: recipe.curve_images].shape[0],
            )
        records.append(record)
        log(json.dumps(record))
        if until is not None and record.get("test_log_likelihood", -math.inf) >= until:
            break
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="default", choices=data.DATASETS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dataset = data.prepare(data.load_dataset(args.dataset, args.data_dir), "dynamic")
    train(
        PlainVAE(),
        dataset,
        Recipe(args.epochs, args.batch_size, lambda epoch: args.lr),
        log=lambda line: print(line, flush=True),
    )


if __name__ == "__main__":
    main()
