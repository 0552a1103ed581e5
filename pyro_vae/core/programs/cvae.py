"""The conditional VAE (Sohn, Lee and Yan 2015) as Pyro's tutorial sets it (`examples/cvae`): complete an image
from 1, 2 or 3 of its quadrants, as a Pyro program of the images alone (the given pixels are read from x):

    model   z ~ p(z | given) = N(prior_net(given)),   rest ~ Bernoulli(generator(z)[rest])      observed: rest
    guide   z ~ q(z | given, rest) = N(recognition_net(x))

where given is the image with the pixels to complete set to -1 (the tutorial's masking), and the quadrants given
are the tutorial's: 1, the bottom left; 2, the left half; 3, all but the bottom right. Its ELBO bounds the
conditional log-likelihood log p(rest | given), which the engine's importance sampling estimates (the model
observes only the rest). Bernoulli over grey pixels is the tutorial's binary cross entropy
(`validate_args=False`); with binarized images it is a likelihood.

The tutorial's prior network also reads a baseline network's guess of the rest, `baseline(given)`, a
deterministic 500-500 network trained first by its own binary cross entropy on the rest, then frozen. With
`baseline=True` this one does so too, trained in the same run: the prior network reads the given pixels with
the baseline's guess (detached) in place of the rest, and while training the model adds the baseline's own
objective, log Bernoulli(rest | baseline(given)), as a factor (none in eval mode, so evaluations read the ELBO
itself), which reaches the baseline's weights alone.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.core.networks import mlp

SIDE = 28  # the tutorial's images: MNIST's 28 x 28


def given_mask(quadrants: int, side: int = SIDE) -> torch.Tensor:
    """(side * side,) bool: the pixels given, as Pyro's tutorial's `MaskImages` chooses them."""
    if quadrants not in (1, 2, 3):
        raise ValueError(f"1, 2 or 3 quadrants are given, not {quadrants}")
    given = torch.zeros(side, side, dtype=torch.bool)
    half = side // 2
    given[half:, :half] = True
    if quadrants >= 2:
        given[:, :half] = True
    if quadrants == 3:
        given[:half, :] = True
    return given.flatten()


class ConditionalVAE(nn.Module):
    """The CVAE for images of `pixels` (28 x 28) with `quadrants` given: the tutorial's 500-500 ReLU networks
    and z = 200."""

    def __init__(
        self, pixels: int = SIDE * SIDE, quadrants: int = 1, z_dim: int = 200, hidden: int = 500, baseline: bool = False
    ):
        super().__init__()
        if pixels != SIDE * SIDE:
            raise ValueError(f"the CVAE completes quadrants of {SIDE} x {SIDE} images, not of {pixels} pixels")
        self.register_buffer("given", given_mask(quadrants))
        self.baseline = (
            nn.Sequential(mlp([pixels, hidden, hidden], "relu"), nn.Linear(hidden, pixels)) if baseline else None
        )
        self.prior_net = gaussian_head(pixels, hidden, z_dim)
        self.recognition_net = gaussian_head(pixels, hidden, z_dim)
        self.generator = nn.Sequential(mlp([z_dim, hidden, hidden], "relu"), nn.Linear(hidden, pixels))

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """The image as the baseline sees it: the given pixels, -1 elsewhere."""
        return torch.where(self.given, x, -1.0)

    def prior_input(self, x: torch.Tensor) -> torch.Tensor:
        """The image as the prior network sees it: the given pixels, and elsewhere -1, or with a baseline its
        guess of the rest (detached: the prior network's gradient does not train the baseline)."""
        if self.baseline is None:
            return self.masked(x)
        return torch.where(self.given, x, torch.sigmoid(self.baseline(self.masked(x))).detach())

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("images", x.shape[0]):
            loc, scale = split(self.prior_net(self.prior_input(x)))
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            logits = self.generator(z)[..., ~self.given]
            rest = dist.Bernoulli(logits=logits, validate_args=False).to_event(1)
            pyro.sample("rest", rest, obs=x[..., ~self.given])
            if self.training and self.baseline is not None:  # the baseline's own objective, its weights' alone
                guess = dist.Bernoulli(logits=self.baseline(self.masked(x))[..., ~self.given], validate_args=False)
                pyro.factor("baseline", guess.to_event(1).log_prob(x[..., ~self.given]))

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("images", x.shape[0]):
            loc, scale = split(self.recognition_net(x))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def complete(self, x: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """(samples, images, pixels): the given pixels kept, the rest the generator's means at z ~ p(z | given)."""
        loc, scale = split(self.prior_net(self.prior_input(x)))
        noise = torch.randn(samples, *loc.shape, generator=generator, dtype=loc.dtype, device="cpu").to(loc.device)
        return torch.where(self.given, x, torch.sigmoid(self.generator(loc + scale * noise)))

    @torch.no_grad()
    def figures(self, x: torch.Tensor, samples: int = 3) -> dict[str, tuple[torch.Tensor, int, str]]:
        """completions.png: a column per test image; rows: the given quadrants (the rest grey), `samples`
        completions (z ~ p(z | given), fixed seed), the truth."""
        shown = torch.where(self.given, x, 0.5)
        completed = self.complete(x, samples, torch.Generator().manual_seed(0)).flatten(0, 1)
        title = f"given, {samples} completions, truth"
        return {"completions": (torch.cat([shown, completed, x]), samples + 2, title)}


def gaussian_head(inputs: int, hidden: int, z_dim: int) -> nn.Sequential:
    """inputs -> two ReLU layers of `hidden` -> (loc, log scale) of z, concatenated."""
    return nn.Sequential(mlp([inputs, hidden, hidden], "relu"), nn.Linear(hidden, 2 * z_dim))


def split(head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A head's output as (loc, scale = exp(log scale))."""
    loc, log_scale = head.chunk(2, -1)
    return loc, log_scale.exp()
