"""The Pyro model p(x, z) = p(z) p(x|z) and the guide q(z|x), over one batch of images.

    z ~ N(0, I)              (site "z", event dim 1)
    x ~ p(x | decoder(z))    (site "x", event dim 1; Bernoulli, continuous Bernoulli or Gaussian)

Both run inside `pyro.plate("data")` over the batch, scaled by 1/batch so that every loss is per
image, and the z site is scaled by the KL weight beta in model and guide alike, which multiplies
the KL term of the ELBO by beta; beta = 0 masks the z site out (Pyro refuses a zero scale), leaving
-E_q log p(x|z), and with the point-mass guide (`delta`) and a Gaussian likelihood that is a plain
autoencoder's squared error: sum_j (x_j - xhat_j)^2 / (2 sigma^2) + (D/2) log(2 pi sigma^2).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from pyro_vae.core import analytic
from pyro_vae.core.distributions import ContinuousBernoulli
from pyro_vae.core.guides import GUIDES, build_guide
from pyro_vae.core.networks import ACTIVATIONS, Decoder
from pyro_vae.errors import ConfigError

LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")

MAX_UNITS = 100_000  # the widest layer a config may ask for


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the VAE. Defaults follow Pyro's VAE tutorial: 784-400-50, softplus."""

    x_dim: int = 784
    hidden: tuple[int, ...] = (400,)
    z_dim: int = 50
    activation: str = "softplus"
    likelihood: str = "bernoulli"
    sigma: float = 0.1  # Gaussian likelihood: the pixel noise (its initial value when learned)
    learn_sigma: bool = False
    guide: str = "diagonal"
    flow_layers: int = 2  # inverse-autoregressive layers of the flow guide
    local_points: int = 1000  # local guide: training images with their own q (a fixed subset)
    local_test_points: int = 0  # local guide: test images with their own q (set from the data by training)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"unknown likelihood {self.likelihood!r}; choose one of: {', '.join(LIKELIHOODS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        if self.guide not in GUIDES:
            raise ConfigError(f"unknown guide {self.guide!r}; choose one of: {', '.join(GUIDES)}")
        if not all(1 <= size <= MAX_UNITS for size in (self.z_dim, self.x_dim, *self.hidden)):
            raise ConfigError(
                f"layer sizes must be from 1 to {MAX_UNITS:,}: x_dim={self.x_dim}, hidden={self.hidden}, "
                f"z_dim={self.z_dim}"
            )
        if not 1 <= self.flow_layers <= 64:
            raise ConfigError(f"--flow-layers must be from 1 to 64, got {self.flow_layers}")
        if not (1 <= self.local_points <= 10_000_000 and 0 <= self.local_test_points <= 10_000_000):
            raise ConfigError(f"--local-points must be from 1 to 10,000,000, got {self.local_points}")
        if not 1e-6 <= self.sigma <= 1e6:
            raise ConfigError(f"--sigma must be from 1e-6 to 1e6, got {self.sigma}")
        if self.learn_sigma and self.likelihood != "gaussian":
            raise ConfigError("--learn-sigma applies only to --likelihood gaussian")


class VAE(nn.Module):
    """Decoder, likelihood and variational family of one VAE, with Pyro's `model` and `guide`.

    Parameters live in the module, not in Pyro's global param store, so models never share state.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.decoder = Decoder(config.z_dim, config.hidden, config.x_dim, config.activation)
        self.q = build_guide(
            config.guide,
            config.x_dim,
            config.hidden,
            config.z_dim,
            config.activation,
            config.flow_layers,
            config.local_points + config.local_test_points,
        )
        log_sigma = torch.tensor(math.log(config.sigma))
        if config.learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    @torch.no_grad()
    def init_output_bias(self, train_images: torch.Tensor) -> None:
        """Start the decoder's output bias at b = logit(clip(mean of the training images, 0.001, 0.999)), so
        that from the first step p(x|z) is the mean training image's Bernoulli (as the IWAE authors' code)."""
        mean = train_images.reshape(-1, self.config.x_dim).float().mean(0).clamp(1e-3, 1 - 1e-3)
        self.decoder.head.bias.copy_(torch.logit(mean))

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def is_local(self) -> bool:
        """Whether q has free parameters per data point (the `local` guide) instead of an encoder."""
        return self.config.guide == "local"

    @property
    def is_point_mass(self) -> bool:
        """Whether q(z|x) is a point mass (the `delta` guide): it has no density to importance-sample with."""
        return self.config.guide == "delta"

    def _conditioning(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """What q reads: the images x, or for the local guide the rows `index` of its data points."""
        if not self.is_local:
            return x
        if index is None:
            raise ConfigError(
                "the local guide has parameters only for its own fixed data points, "
                "so it needs their row numbers (index), not images"
            )
        return index

    def approximate_posterior(self, x: torch.Tensor, index: torch.Tensor | None = None) -> dist.Distribution:
        """q(z|x) as a Pyro distribution (batch shape (batch,), event dim 1): what the guide samples."""
        return self.q(self._conditioning(x, index))

    def sample_q(
        self, x: torch.Tensor, eps: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ q(z|x) from standard-normal noise eps (S, batch, z_dim), and log q(z|x): the guide's own
        reparameterization."""
        return self.q.sample(self._conditioning(x, index), eps)

    def kl_to_prior(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) per image in closed form, or None for a guide without one."""
        return self.q.kl_to_prior(self._conditioning(x, index))

    def location(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """One representative z per image (q's mean, or for the flow the image of its base mean)."""
        return self.q.location(self._conditioning(x, index))

    def test_rows(self, count: int | None = None) -> torch.Tensor | None:
        """The local guide's rows for its first `count` test images (all by default), which follow the
        `local_points` training rows; None for the amortized guides."""
        if not self.is_local:
            return None
        rows = torch.arange(self.config.local_test_points, device=self.log_sigma.device)
        return (rows + self.config.local_points)[:count]

    def at(self, index: torch.Tensor) -> "DataPoints":
        """This VAE with q fixed to the data points `index` (rows of x to come), as an
        `analytic.LatentVariableModel`: how the local guide's q enters the hand-derived ELBO forms."""
        return DataPoints(self, index)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        """p(x|z) as a Pyro distribution with event dim 1."""
        logits = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            return dist.Bernoulli(logits=logits).to_event(1)
        if self.config.likelihood == "continuous-bernoulli":
            return ContinuousBernoulli(logits=logits).to_event(1)  # exact log C (see distributions.py)
        return dist.Normal(torch.sigmoid(logits), self.sigma.expand(logits.shape)).to_event(1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, by the hand-derived formulas of `analytic`."""
        logits = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            return analytic.bernoulli_log_likelihood(x, logits)
        if self.config.likelihood == "continuous-bernoulli":
            return analytic.continuous_bernoulli_log_likelihood(x, logits)
        return analytic.gaussian_log_likelihood(x, torch.sigmoid(logits), self.sigma)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], the image a person sees for a latent z."""
        return self.likelihood(z).mean

    @contextmanager
    def _images(self, x: torch.Tensor) -> Iterator[None]:
        """The batch plate, scaled by 1/batch so that losses are per image."""
        with poutine.scale(scale=1.0 / x.shape[0]), pyro.plate("data", x.shape[0], dim=-1):
            yield

    def model(self, x: torch.Tensor, kl_scale: float | torch.Tensor = 1.0, index: torch.Tensor | None = None) -> None:
        """p(z) p(x|z): z ~ N(0, I), x ~ p(x | decoder(z)), observed. (`index` is the guide's.)"""
        with self._images(x):
            with _kl_weight(kl_scale):
                prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([x.shape[0], self.config.z_dim])
                z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: torch.Tensor, kl_scale: float | torch.Tensor = 1.0, index: torch.Tensor | None = None) -> None:
        """q(z|x), the variational family: amortized by an encoder of x, or for the local guide the free
        parameters of the data points in rows `index`."""
        with self._images(x), _kl_weight(kl_scale):
            pyro.sample("z", self.approximate_posterior(x, index))


def _kl_weight(beta: float | torch.Tensor) -> poutine.messenger.Messenger:
    """Weights the z site's log-densities (and so the KL term) by beta: `poutine.scale`, or for beta = 0
    `poutine.mask(False)`, which drops them (Pyro refuses a scale of 0)."""
    if not isinstance(beta, torch.Tensor) and beta == 0:
        return poutine.mask(mask=False)
    return poutine.scale(scale=beta)


@dataclass(frozen=True)
class DataPoints:
    """A VAE whose q is fixed to the data points in rows `index` (see `VAE.at`)."""

    vae: VAE
    index: torch.Tensor

    @property
    def z_dim(self) -> int:
        return self.vae.z_dim

    def sample_q(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.sample_q(x, eps, self.index)

    def kl_to_prior(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.vae.kl_to_prior(x, self.index)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.vae.log_likelihood(x, z)
