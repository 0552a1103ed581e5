"""The second stochastic layer of a two-layer VAE (Burda et al. 2016, section 5): z2 above z1.

    generative:  z2 ~ N(0, I),  z1 ~ p(z1|z2) = N(m(z2), diag s(z2)^2),  x ~ p(x|z1)
    guide:       z1 ~ q(z1|x),  z2 ~ q(z2|z1) = N(mu(z1), diag sigma(z1)^2)

so that log w = log p(x|z1) + log p(z1|z2) + log N(z2; 0, I) - log q(z1|x) - log q(z2|z1). The hand-derived
forms see one flat latent z = (z1, z2) of size d1 + d2, made from standard-normal noise eps = (eps1, eps2):
z1 by q(z1|x)'s own reparameterization, then z2 = mu(z1) + sigma(z1) * eps2.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pyro_vae.core import analytic
from pyro_vae.core.guides import DiagonalNormal
from pyro_vae.core.networks import Encoder, mlp


def gaussian_layer(n_in: int, hidden: tuple[int, ...], n_out: int, activation: str) -> DiagonalNormal:
    """u -> N(mu(u), diag sigma(u)^2) over n_out dimensions: an MLP through `hidden`, then a linear head
    giving (mu, log sigma)."""
    return DiagonalNormal(Encoder(mlp([n_in, *hidden], activation), hidden[-1] if hidden else n_in, n_out))


class TopLayer(nn.Module):
    """q(z2|z1) through `hidden` and p(z1|z2) through the same sizes reversed, as the paper's 100-100."""

    def __init__(self, z1_dim: int, z2_dim: int, hidden: tuple[int, ...], activation: str):
        super().__init__()
        self.z1_dim, self.z2_dim = z1_dim, z2_dim
        self.q = gaussian_layer(z1_dim, hidden, z2_dim, activation)
        self.prior = gaussian_layer(z2_dim, tuple(reversed(hidden)), z1_dim, activation)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z1, z2) of a flat latent (..., d1 + d2)."""
        return z[..., : self.z1_dim], z[..., self.z1_dim :]

    def log_prior(self, z: torch.Tensor, top: Callable = analytic.standard_normal_log_prob) -> torch.Tensor:
        """log p(z1, z2) = log p(z2) + log N(z1; m(z2), diag s(z2)^2), log p(z2) by `top` (N(0, I), or a
        learned prior's)."""
        z1, z2 = self.split(z)
        return top(z2) + analytic.diagonal_normal_log_prob(z1, *self.prior.loc_and_scale(z2))

    def from_noise(self, eps: torch.Tensor, top: Callable = lambda eps2: eps2) -> torch.Tensor:
        """(z1, z2) ~ p(z1|z2) p(z2) from noise eps (..., d1 + d2): z2 = top(eps2) (eps2 itself for N(0, I)),
        z1 = m(z2) + s(z2) * eps1."""
        eps1, eps2 = self.split(eps)
        z2 = top(eps2)
        return torch.cat([analytic.reparameterize(*self.prior.loc_and_scale(z2), eps1), z2], -1)

    def extend(self, z1: torch.Tensor, log_q1: torch.Tensor, eps2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z1, z2) with z2 ~ q(z2|z1) from noise eps2, and log q(z1, z2|x) = log q(z1|x) + log q(z2|z1)."""
        z2, log_q2 = self.q.sample(z1, eps2)
        return torch.cat([z1, z2], -1), log_q1 + log_q2
