"""Ground truth for a 2-D latent space: the exact posterior on a grid, and log p(x) by quadrature (the
models it is checked on, and the per-image fits of the amortization gap, are trained in `training.fits`).

With z in R^2, p(z|x) = p(x|z) p(z) / p(x) can be evaluated on a square grid of spacing h, and

    log p(x) ~ log sum_g p(x|z_g) p(z_g) h^2        (the midpoint rule on [-limit, limit]^2),

whose error is small when the grid is fine against the posterior's width and the prior's mass outside
the square is negligible (N(0, I) puts 1 - (1 - 2 Phi(-limit))^2 of its mass outside: 1.3e-4 at 4, 1.1e-6 at 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_vae.errors import ConfigError


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
