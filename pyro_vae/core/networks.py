"""Encoder and decoder torch modules: multilayer perceptrons of configurable width and activation."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each followed by the activation."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x -> (mu(x), sigma(x)), the parameters of q(z|x) = N(mu, diag sigma^2).

    One linear head gives (mu, log sigma); sigma = exp(log sigma) > 0.
    """

    def __init__(self, x_dim: int, hidden: tuple[int, ...], z_dim: int, activation: str):
        super().__init__()
        self.body = mlp([x_dim, *hidden], activation)
        self.head = nn.Linear(hidden[-1] if hidden else x_dim, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale, _ = self.with_features(x)
        return loc, scale

    def with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu(x), sigma(x), h(x)) with h the last hidden layer's output."""
        features = self.body(x)
        loc, log_scale = self.head(features).chunk(2, dim=-1)
        return loc, log_scale.exp(), features


class Decoder(nn.Module):
    """z -> logits l(z) of the pixel likelihood (Bernoulli probabilities are sigmoid(l)).

    The hidden layers mirror the encoder's in reverse order.
    """

    def __init__(self, z_dim: int, hidden: tuple[int, ...], x_dim: int, activation: str):
        super().__init__()
        self.body = mlp([z_dim, *reversed(hidden)], activation)
        self.head = nn.Linear(hidden[0] if hidden else z_dim, x_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))
