"""Small fits with the one SVI step (`step.svi_step`), for ground-truth checks: a VAE with a 2-D latent space
whose log p(x) the grid gives exactly (`evaluation.posterior`), and the best diagonal Gaussian per image with
the decoder fixed (the non-amortized, "local" guide) that measures the encoder's amortization gap."""

from __future__ import annotations

from typing import Callable

import pyro
import torch

from pyro_vae import data
from pyro_vae.core import analytic
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.training.step import Batch, svi_step


def train_2d_vae(steps: int, seed: int = 0) -> VAE:
    """A small VAE with a 2-D latent space (64 hidden units, float64), `steps` Adam steps (lr 3e-3) of 128
    dynamically binarized default-data images on the exact-KL ELBO: a trained model whose log p(x) the grid
    gives exactly, for checking estimators against the truth (tests, benchmarks/log_px_calibration.py)."""
    dataset = data.prepare(data.load_dataset("default"), "dynamic")
    pyro.set_rng_seed(seed)
    vae = VAE(ModelConfig(hidden=(64,), z_dim=2)).double()
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3, fused=True)
    train = dataset.train.double()

    def loss(x: torch.Tensor, kl_weight: float, rows: None) -> torch.Tensor:
        return -analytic.elbo_analytic_kl(vae, x, torch.randn(1, x.shape[0], 2, dtype=torch.float64)).mean()

    for _ in range(steps):
        svi_step(loss, optimizer, Batch(torch.bernoulli(train[torch.randint(len(train), (128,))])))
    return vae.eval()


def fit_local_guide(
    vae,
    x: torch.Tensor,
    steps: int = 500,
    lr: float = 0.05,
    samples: int = 8,
    seed: int = 0,
    eval_samples: int = 1000,
    max_rows: int = 65_536,
    progress: Callable[[int], None] = lambda steps: None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-amortized guide: one free N(mu_i, diag sigma_i^2) per image, fitted by Adam on the ELBO
    E_q[log p(x_i|z)] - KL(q_i || N(0, I)) (exact KL, `samples` reparameterized samples a step) with the
    decoder fixed, starting from the encoder's q(z|x_i). Returns (mu, sigma, ELBO per image estimated with
    `eval_samples` samples, at most `max_rows` (sample, image) pairs at a time). ELBO_local - ELBO_amortized
    is the amortization gap."""
    generator = torch.Generator(device=x.device).manual_seed(seed)

    def elbo(loc: torch.Tensor, scale: torch.Tensor, num_samples: int) -> torch.Tensor:
        eps = torch.randn((num_samples, *loc.shape), generator=generator, dtype=x.dtype, device=x.device)
        z = analytic.reparameterize(loc, scale, eps)
        return vae.log_likelihood(x, z).mean(0) - analytic.kl_diagonal_normal_standard_normal(loc, scale)

    with torch.no_grad():
        start = vae.location(x)
    loc = start.clone().requires_grad_(True)
    log_scale = torch.full_like(start, -1.0, requires_grad=True)
    optimizer = torch.optim.Adam([loc, log_scale], lr=lr, fused=True)

    def loss(x: torch.Tensor, kl_weight: float, rows: None) -> torch.Tensor:
        return -elbo(loc, log_scale.exp(), samples).sum()

    for _ in range(steps):  # the decoder's parameters are neither changed nor given a .grad
        svi_step(loss, optimizer, Batch(x), only_optimized=True)
        progress(1)
    with torch.no_grad():
        loc, scale = loc.detach(), log_scale.exp()
        per_call = max(1, min(eval_samples, max_rows // x.shape[0]))
        counts = [min(per_call, eval_samples - start) for start in range(0, eval_samples, per_call)]
        return loc, scale, sum(k * elbo(loc, scale, k) for k in counts) / eval_samples
