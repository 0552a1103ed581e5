"""Encoder and decoder torch modules: multilayer perceptrons and convolutional networks.

Images travel as rows of pixels (batch, D), D = C * H * W; the convolutional networks reshape them to
(batch, C, H, W) themselves, so model, guides and estimators never see an image's shape.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}
NETWORKS = ("mlp", "conv")


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each followed by the activation."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def channels_first(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of an image shape given as (H, W) (one channel) or (C, H, W)."""
    return (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)


def halvings(height: int, width: int, layers: int) -> list[tuple[int, int]]:
    """The feature maps' sizes after each 4x4 convolution of stride 2 and padding 1:
    h -> floor((h - 2) / 2) + 1, starting with (height, width)."""
    sizes = [(height, width)]
    for _ in range(layers):
        h, w = sizes[-1]
        sizes.append(((h - 2) // 2 + 1, (w - 2) // 2 + 1))
    return sizes


class ConvBody(nn.Module):
    """x (..., C*H*W) -> features (..., F): 4x4 convolutions of stride 2 (each halves the image) with
    `channels[i]` maps and the activation, then flattened; F = channels[-1] * h * w."""

    def __init__(self, image_shape: tuple[int, ...], channels: tuple[int, ...], activation: str):
        super().__init__()
        self.image_shape = channels_first(image_shape)
        layers: list[nn.Module] = []
        for c_in, c_out in zip((self.image_shape[0], *channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
        self.net = nn.Sequential(*layers, nn.Flatten())
        h, w = halvings(*self.image_shape[1:], len(channels))[-1]
        self.features = channels[-1] * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, *self.image_shape)).reshape(*x.shape[:-1], self.features)


class Encoder(nn.Module):
    """x -> (mu(x), sigma(x)), the parameters of q(z|x) = N(mu, diag sigma^2).

    A body (an MLP, or convolutions) gives features h(x); one linear head gives (mu, log sigma) from them;
    sigma = exp(log sigma) > 0.
    """

    def __init__(self, body: nn.Module, features: int, z_dim: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(features, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale, _ = self.with_features(x)
        return loc, scale

    def with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu(x), sigma(x), h(x)) with h the body's output."""
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

    @property
    def output_bias(self) -> torch.Tensor:
        """The logits' bias, one per pixel."""
        return self.head.bias


class ConvDecoder(nn.Module):
    """z -> logits (..., C*H*W): a linear layer to the encoder's last feature maps, then 4x4 transposed
    convolutions of stride 2 back through the encoder's sizes (each doubling the image), and a bias per
    pixel. It mirrors `ConvBody` with the same `channels`."""

    def __init__(self, z_dim: int, image_shape: tuple[int, ...], channels: tuple[int, ...], activation: str):
        super().__init__()
        self.image_shape = channels_first(image_shape)
        self.sizes = halvings(*self.image_shape[1:], len(channels))[::-1]  # smallest first
        self.maps = channels[-1]
        h, w = self.sizes[0]
        self.body = nn.Sequential(nn.Linear(z_dim, self.maps * h * w), ACTIVATIONS[activation]())
        outs = (*reversed(channels[:-1]), self.image_shape[0])
        self.layers = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1) for c_in, c_out in zip(reversed(channels), outs)
        )
        self.activation = ACTIVATIONS[activation]()
        self.bias = nn.Parameter(torch.zeros(math.prod(self.image_shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.body(z.reshape(-1, z.shape[-1])).reshape(-1, self.maps, *self.sizes[0])
        for index, (layer, size) in enumerate(zip(self.layers, self.sizes[1:])):
            y = layer(y, output_size=size)
            y = y if index == len(self.layers) - 1 else self.activation(y)
        return y.flatten(1).reshape(*z.shape[:-1], -1) + self.bias

    @property
    def output_bias(self) -> torch.Tensor:
        return self.bias
