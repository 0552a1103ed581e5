"""Evaluation of a trained VAE: the negative ELBO per image over a whole split."""

from __future__ import annotations

import torch

from . import analytic
from .model import VAE


@torch.no_grad()
def negative_elbo(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int = 1,
    seed: int = 0,
    chunk_size: int = 2000,
) -> float:
    """-ELBO per image averaged over the rows of x, in nats: -(E_q[log p(x|z)] - KL(q || p(z))) with
    the KL term exact and the expectation estimated by `num_samples` reparameterized samples.

    The noise comes from its own generator seeded with `seed`, so the figure is reproducible and
    drawing it leaves the global random state (and so training) untouched.
    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for chunk in x.split(chunk_size):
        eps = torch.randn(
            (num_samples, chunk.shape[0], vae.config.z_dim), generator=generator, device=x.device, dtype=x.dtype
        )
        total -= analytic.elbo_analytic_kl(vae, chunk, eps).double().sum()
    return total.item() / x.shape[0]
