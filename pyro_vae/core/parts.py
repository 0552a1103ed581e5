"""The user's own parts of a VAE: an encoder, a decoder or a whole guide, as any `torch.nn.Module`s; or a
whole Pyro program of the user's, a model and its guide (`core.program.Program`).

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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from pyro_vae.errors import ConfigError, first_line

PART_NAMES = ("encoder", "decoder", "guide", "model")


@dataclass(frozen=True)
class Parts:
    """The user's own modules for a VAE, each None for the built-in one; or with `model`, the user's own Pyro
    program: `model` and `guide` are then a Pyro model and its guide (functions of the batch, or modules)."""

    encoder: nn.Module | None = None
    decoder: nn.Module | None = None
    guide: object = None
    model: object = None

    def __post_init__(self) -> None:
        if self.model is not None and (self.guide is None or self.encoder is not None or self.decoder is not None):
            raise ConfigError(
                "your own Pyro model is trained with its own guide and nothing else: give model=... and guide=..., "
                "without encoder or decoder"
            )

    def given(self) -> dict[str, object]:
        """The parts given, by name: the keyword arguments of `train`, `resume` and `load_run`."""
        return {name: getattr(self, name) for name in PART_NAMES if getattr(self, name) is not None}

    @property
    def is_program(self) -> bool:
        """Whether these are the user's own program (a model and its guide) rather than parts of the VAE."""
        return self.model is not None

    def description(self) -> str:
        """The parts by name, as a run's config records them: "encoder=pkg.Class; decoder=..."."""
        given = dict(encoder=self.encoder, decoder=self.decoder, guide=self.guide, model=self.model)
        return "; ".join(f"{name}={qualified_name(m)}" for name, m in given.items() if m is not None)

    def missing(self, description: str) -> list[str]:
        """The parts a recorded description names that are not given here."""
        names = [entry.split("=")[0] for entry in description.split("; ") if entry]
        return [name for name in names if getattr(self, name) is None]


def qualified_name(part: object) -> str:
    """A part's name as a run's config records it: "package.module.function", or a module's by its class."""
    named = part if hasattr(part, "__qualname__") else type(part)
    return f"{named.__module__}.{named.__qualname__}"


def check_module(part: object, name: str) -> None:
    """The user's `name` part is a torch module (its parameters train, its state is checkpointed)."""
    if not isinstance(part, nn.Module):
        raise ConfigError(f"your {name} must be a torch.nn.Module, got a {type(part).__name__}")


def check_guide(guide: object) -> None:
    """The user's guide is a module with the methods of `guides.Guide`: sample, kl_to_prior, location."""
    check_module(guide, "guide")
    missing = [name for name in ("sample", "kl_to_prior", "location") if not callable(getattr(guide, name, None))]
    if missing:
        raise ConfigError(
            f"your guide ({type(guide).__name__}) lacks {', '.join(missing)}: a guide is a module with the methods "
            "of pyro_vae.Guide (sample(x, eps) -> (z, log q), kl_to_prior(x), location(x)); to bring only an "
            "encoder of (loc, scale), pass encoder=..."
        )


def check_floats(name: str, part: nn.Module, values: tuple[torch.Tensor, ...], like: torch.Tensor, what: str) -> None:
    """The part's outputs are real floating-point tensors of the input's dtype (float32 images give float32
    logits): another dtype would change the loss's precision or fail inside Pyro."""
    kinds = {value.dtype for value in values}
    if kinds != {like.dtype}:
        raise ConfigError(
            f"your {name} ({type(part).__name__}) returned {', '.join(sorted(map(str, kinds)))} {what} for "
            f"{like.dtype} inputs; it must return {like.dtype}, the inputs' dtype"
        )


class ImageEncoder(nn.Module):
    """x (..., D) -> the user's encoder on (N, *image_shape) -> (loc, scale), each (..., z_dim)."""

    def __init__(self, encoder: nn.Module, image_shape: tuple[int, ...], z_dim: int):
        check_module(encoder, "encoder")
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
        check_floats("encoder", self.encoder, tuple(out), x, "(loc, scale)")
        return tuple(part.reshape(*x.shape[:-1], self.z_dim) for part in out)


class ImageDecoder(nn.Module):
    """z (..., z_dim) -> the user's decoder on (N, z_dim) -> logits as rows of pixels (..., D)."""

    def __init__(self, decoder: nn.Module, image_shape: tuple[int, ...]):
        check_module(decoder, "decoder")
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
        check_floats("decoder", self.decoder, (logits,), z, "logits")
        return logits.reshape(*z.shape[:-1], self.pixels)


@torch.no_grad()
def check_parts(vae: nn.Module, x: torch.Tensor, rows: torch.Tensor | None = None) -> None:
    """Run q and the decoder once on the images x (rows of pixels); a part that gives a wrong shape, a
    non-positive scale or non-finite values is refused in one line naming it and the shapes."""
    z_dim, batch = vae.z_dim, x.shape[0]
    eps = torch.randn(1, batch, z_dim, dtype=x.dtype, device=x.device)
    with failing_part("the guide (q(z|x), with its encoder)", f"images of shape {tuple(x.shape)}"):
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
    with failing_part("the decoder", f"z of shape {tuple(z[..., : vae.config.z_dim].shape)}"):
        logits = vae.decoder(z[..., : vae.config.z_dim])  # with two layers, p(x|z1)
    if tuple(logits.shape) != (1, batch, x.shape[1]):
        raise ConfigError(
            f"the decoder gave logits of shape {tuple(logits.shape)} for z of shape {tuple(z.shape)}; "
            f"expected {(1, batch, x.shape[1])}"
        )
    if not torch.isfinite(logits).all():
        raise ConfigError("the decoder gave NaN or infinite logits on two training images, before any training")


@contextmanager
def failing_part(name: str, given: str) -> Iterator[None]:
    """A part that raises on the probe's two images is refused in one line naming it, what it was given and
    the first line of its error (a decoder built for another z_dim: `mat1 and mat2 shapes cannot be
    multiplied`), not a traceback from inside it."""
    try:
        yield
    except ConfigError:
        raise
    except (RuntimeError, TypeError, ValueError, AttributeError, IndexError, KeyError) as error:
        raise ConfigError(
            f"{name} failed on two training images ({given}): {type(error).__name__}: {first_line(error)}"
        ) from None


def _shape(value: object) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _shapes(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of " + ", ".join(_shapes(v) for v in value)
    return f"a {type(value).__name__}"
