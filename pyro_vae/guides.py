"""Variational families q(z|x): each maps a batch of images to a Pyro distribution over z."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from . import analytic
from .errors import ConfigError
from .networks import Encoder


class DiagonalNormal(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2), amortized by the encoder; sampled by
    z = mu(x) + sigma(x) * eps, so `TraceMeanField_ELBO` can use the closed-form KL."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def kl_to_prior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per image, in closed form."""
        return analytic.kl_diagonal_normal_standard_normal(*self.encoder(x))


GUIDES = {"diagonal": DiagonalNormal}


def build_guide(name: str, encoder: Encoder) -> nn.Module:
    if name not in GUIDES:
        raise ConfigError(f"unknown guide {name!r}; choose one of: {', '.join(GUIDES)}")
    return GUIDES[name](encoder)
