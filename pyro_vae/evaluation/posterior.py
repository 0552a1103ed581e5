"""Ground truth for a 2-D latent space: the exact posterior on a grid, log p(x) by quadrature, and the
best diagonal Gaussian per image (the non-amortized, "local" guide) to measure the amortization gap.

With z in R^2, p(z|x) = p(x|z) p(z) / p(x) can be evaluated on a square grid of spacing h, and

    log p(x) ~ log sum_g p(x|z_g) p(z_g) h^2        (the midpoint rule on [-limit, limit]^2),

whose error is small when the grid is fine against the posterior's width and the prior's mass outside
the square is negligible (N(0, I) puts 1 - (1 - 2 Phi(-limit))^2 of its mass outside: 1.3e-4 at 4, 1.1e-6 at 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch

from pyro_vae import data
from pyro_vae.core import analytic
from pyro_vae.core.model import VAE, ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.training.step import Batch, svi_step


@dataclass(frozen=True)
class GridPosterior:
    """p(z|x) on a `points` x `points` grid: `axis` holds the grid's coordinates along z_1 and z_2,
    `log_density` (batch, points, points) the normalized log posterior density log p(z|x) at
    (axis[i], axis[j]), and `log_marginal` (batch,) log p(x) by quadrature."""

    axis: torch.Tensor
    log_density: torch.Tensor
    log_marginal: torch.Tensor


@torch.no_grad()
def grid_posterior(
    vae, x: torch.Tensor, limit: float = 5.0, points: int = 301, max_rows: int = 65_536
) -> GridPosterior:
    """The exact posterior of each image of x on the grid, and log p(x) by the midpoint rule (above).
    `vae` needs z_dim = 2 and log_likelihood(x, z) with z of shape (grid points, batch, 2); the decoder
    runs on at most `max_rows` (grid point, image) pairs at a time, which bounds the memory."""
    if vae.z_dim != 2:
        raise ConfigError(f"the grid posterior needs a 2-D latent space, got z-dim {vae.z_dim}")
    axis = torch.linspace(-limit, limit, points, dtype=x.dtype, device=x.device)
    spacing = axis[1] - axis[0]
    z = torch.cartesian_prod(axis, axis)  # (points^2, 2), row i * points + j is (axis[i], axis[j])
    log_joint = torch.cat(
        [
            vae.log_likelihood(x, part.unsqueeze(1).expand(-1, x.shape[0], -1)) + vae.log_prior(part).unsqueeze(1)
            for part in z.split(max(1, max_rows // x.shape[0]))
        ]
    ).double()  # (points^2, batch)
    log_marginal = torch.logsumexp(log_joint, 0) + 2 * math.log(spacing.item())
    log_density = (log_joint - log_marginal).T.reshape(x.shape[0], points, points)
    return GridPosterior(axis=axis, log_density=log_density, log_marginal=log_marginal)


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
    with torch.no_grad():
        loc, scale = loc.detach(), log_scale.exp()
        per_call = max(1, min(eval_samples, max_rows // x.shape[0]))
        counts = [min(per_call, eval_samples - start) for start in range(0, eval_samples, per_call)]
        return loc, scale, sum(k * elbo(loc, scale, k) for k in counts) / eval_samples
