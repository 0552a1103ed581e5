"""The user's own parts of a VAE: an encoder, a decoder or a whole guide, as any `torch.nn.Module`s.

    encoder(x)  x: (batch, *image_shape)  ->  (loc, scale), each (batch, z_dim), scale > 0   (q = N(loc, scale^2))
    decoder(z)  z: (batch, z_dim)         ->  logits of p(x|z), (batch, *image_shape) or (batch, D)
    guide       a module with the methods of `guides.Guide` (its own encoder inside)

The adapters below give the user's modules images of the data's shape, one batch dimension, and take
their outputs back as rows of pixels; model, guides and estimators never see the difference.
`check_parts` runs every part once on two real images before training, so a wrong shape is one line that
names the part and the shapes, not a traceback from inside Pyro.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pyro_vae.errors import ConfigError

PART_NAMES = ("encoder", "decoder", "guide")


@dataclass(frozen=True)
class Parts:
    """The user's own modules for a VAE, each None for the built-in one."""

    encoder: nn.Module | None = None
    decoder: nn.Module | None = None
    guide: nn.Module | None = None

    def description(self) -> str:
        """The parts by class, as a run's config records them: "encoder=pkg.Class; decoder=..."."""
        given = dict(encoder=self.encoder, decoder=self.decoder, guide=self.guide)
        return "; ".join(
            f"{name}={type(m).__module__}.{type(m).__qualname__}" for name, m in given.items() if m is not None
        )

    def missing(self, description: str) -> list[str]:
        """The parts a recorded description names that are not given here."""
        names = [entry.split("=")[0] for entry in description.split("; ") if entry]
        return [name for name in names if getattr(self, name) is None]


class ImageEncoder(nn.Module):
    """x (..., D) -> the user's encoder on (N, *image_shape) -> (loc, scale), each (..., z_dim)."""

    def __init__(self, encoder: nn.Module, image_shape: tuple[int, ...], z_dim: int):
        super().__init__()
        self.encoder, self.image_shape, self.z_dim = encoder, tuple(image_shape), z_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = x.reshape(-1, *self.image_shape)
        out = self.encoder(images)
        expected = (images.shape[0], self.z_dim)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(_shape(o) == expected for o in out)):
            raise ConfigError(
                f"your encoder ({type(self.encoder).__name__}) returned {_shapes(out)} for images of shape "
                f"{tuple(images.shape)}; it must return (loc, scale), two tensors of shape {expected}"
            )
        return tuple(part.reshape(*x.shape[:-1], self.z_dim) for part in out)


class ImageDecoder(nn.Module):
    """z (..., z_dim) -> the user's decoder on (N, z_dim) -> logits as rows of pixels (..., D)."""

    def __init__(self, decoder: nn.Module, image_shape: tuple[int, ...]):
        super().__init__()
        self.decoder, self.pixels = decoder, math.prod(image_shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(z.reshape(-1, z.shape[-1]))
        if not isinstance(logits, torch.Tensor) or logits[0].numel() != self.pixels:
            raise ConfigError(
                f"your decoder ({type(self.decoder).__name__}) returned {_shapes(logits)} for z of shape "
                f"{tuple(z.reshape(-1, z.shape[-1]).shape)}; it must return the logits of (batch, "
                f"{self.pixels}) pixels, in any shape with the batch first"
            )
        return logits.reshape(*z.shape[:-1], self.pixels)


@torch.no_grad()
def check_parts(vae: nn.Module, x: torch.Tensor, rows: torch.Tensor | None = None) -> None:
    """Run q and the decoder once on the images x (rows of pixels); a part that gives a wrong shape, a
    non-positive scale or non-finite values is refused in one line naming it and the shapes."""
    z_dim, batch = vae.z_dim, x.shape[0]
    eps = torch.randn(1, batch, z_dim, dtype=x.dtype, device=x.device)
    z, log_q = vae.sample_q(x, eps, rows)
    if tuple(z.shape) != (1, batch, z_dim) or tuple(log_q.shape) != (1, batch):
        raise ConfigError(
            f"the guide's sample(x, eps) gave z of shape {tuple(z.shape)} and log q of shape "
            f"{tuple(log_q.shape)} for eps of shape {tuple(eps.shape)}; expected {(1, batch, z_dim)} and {(1, batch)}"
        )
    if not (torch.isfinite(z).all() and torch.isfinite(log_q).all()):
        raise ConfigError(
            "the guide gave NaN or infinite z or log q(z|x) before any training (an encoder's scale must be > 0)"
        )
    logits = vae.decoder(z[..., : vae.config.z_dim])  # with two layers, p(x|z1)
    if tuple(logits.shape) != (1, batch, x.shape[1]):
        raise ConfigError(
            f"the decoder gave logits of shape {tuple(logits.shape)} for z of shape {tuple(z.shape)}; "
            f"expected {(1, batch, x.shape[1])}"
        )


def _shape(value: object) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _shapes(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of " + ", ".join(_shapes(v) for v in value)
    return f"a {type(value).__name__}"
