"""The Pyro model p(x, z) = p(z) p(x|z) and the guide q(z|x), over one batch of images.

    z ~ N(0, I)              (site "z", event dim 1)
    x ~ p(x | decoder(z))    (site "x", event dim 1; Bernoulli, continuous Bernoulli or Gaussian)

or, with two stochastic layers (`two_layer`), z2 ~ N(0, I), z1 ~ p(z1|z2), x ~ p(x | decoder(z1)) (sites
"z2", "z1", "x"), and the guide q(z1|x) q(z2|z1) (sites "z1", "z2").

Both run inside `pyro.plate("data")` over the batch, scaled by 1/batch so that every loss is per
image, and the z site is scaled by the KL weight (`kl_weight`, the config's beta at the end of its
warm-up) in model and guide alike, which multiplies the KL term of the ELBO by it; a weight of 0 masks the z site out (Pyro refuses a zero scale), leaving
-E_q log p(x|z), and with the point-mass guide (`delta`) and a Gaussian likelihood that is a plain
autoencoder's squared error: sum_j (x_j - xhat_j)^2 / (2 sigma^2) + (D/2) log(2 pi sigma^2).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from pyro_vae.core import analytic, guides, parts
from pyro_vae.core.distributions import ContinuousBernoulli
from pyro_vae.core.guides import build_guide
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.networks import ConvBody, ConvDecoder, Decoder, mlp
from pyro_vae.core.two_layer import TopLayer
from pyro_vae.errors import ConfigError


class VAE(nn.Module):
    """Decoder, likelihood and variational family of one VAE, with Pyro's `model` and `guide`.

    Parameters live in the module, not in Pyro's global param store, so models never share state.
    """

    takes_labels = False  # it reads the images alone (a user's `Program` may read their labels too)

    def __init__(
        self,
        config: ModelConfig,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        guide: nn.Module | None = None,
    ):
        """The VAE `config` describes; your own `encoder`, `decoder` or `guide` (see `parts` and
        `guides.Guide`) replace the built-in ones, and `config.user_parts` records them by class."""
        super().__init__()
        self.config = replace(config, user_parts=parts.Parts(encoder, decoder, guide).description())
        self.decoder = build_decoder(self.config) if decoder is None else parts.ImageDecoder(decoder, config.shape)
        self.q = build_q(self.config, encoder, guide)
        self.top = None
        if config.stochastic_layers == 2:
            self.top = TopLayer(config.z_dim, config.z2_dim, config.hidden2, config.activation)
        log_sigma = torch.tensor(math.log(config.sigma))
        if config.learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """q's parameters (phi): the guide's, and with two layers q(z2|z1)'s."""
        return list(self.q.parameters()) + (list(self.top.q.parameters()) if self.top is not None else [])

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The generative model's network parameters (theta): the decoder's, and with two layers p(z1|z2)'s."""
        return list(self.decoder.parameters()) + (list(self.top.prior.parameters()) if self.top is not None else [])

    @property
    def sigma(self) -> torch.Tensor:
        """The Gaussian likelihood's pixel noise sigma = exp(log_sigma) (fixed, or learned with learn_sigma)."""
        return self.log_sigma.exp()

    @torch.no_grad()
    def init_output_bias(self, train_images: torch.Tensor) -> None:
        """Start the decoder's output bias at b = logit(clip(mean of the training images, 0.001, 0.999)), so
        that from the first step p(x|z) is the mean training image's Bernoulli (as the IWAE authors' code)."""
        if not hasattr(self.decoder, "output_bias"):
            raise ConfigError("@init_output_bias sets the built-in decoders' bias per pixel; your decoder has none")
        mean = train_images.reshape(-1, self.config.x_dim).float().mean(0).clamp(1e-3, 1 - 1e-3)
        self.decoder.output_bias.copy_(torch.logit(mean))

    @property
    def z_dim(self) -> int:
        """The size of the latent z (with two layers, of z = (z1, z2): z_dim + z2_dim)."""
        return self.config.z_dim + (self.config.z2_dim if self.top is not None else 0)

    @property
    def is_local(self) -> bool:
        """Whether q has free parameters per data point (the `local` guide) instead of an encoder."""
        return self.config.guide == "local"

    @property
    def is_point_mass(self) -> bool:
        """Whether q(z|x) is a point mass (the `delta` guide): it has no density to importance-sample with."""
        return self.config.guide == "delta"

    def _conditioning(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """What q reads: the images x, or for the local guide the rows `rows` of its data points."""
        if not self.is_local:
            return x
        if rows is None:
            raise ConfigError(
                "the local guide has parameters only for its own fixed data points, "
                "so it needs their row numbers (rows, as a Batch carries them), not images"
            )
        return rows

    def approximate_posterior(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> dist.Distribution:
        """q(z|x) as a Pyro distribution (batch shape (batch,), event dim 1): what the guide samples (for a
        guide of the user's without `forward`, its samples with their log-densities)."""
        given = self._conditioning(x, rows)
        return self.q(given) if has_distribution(self.q) else guides.SampledPosterior(self.q, given, self.z_dim)

    def sample_q(
        self, x: torch.Tensor, eps: torch.Tensor, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ q(z|x) from standard-normal noise eps (S, batch, z_dim), and log q(z|x): the guide's own
        reparameterization (with two layers, z = (z1, z2) and q(z1, z2|x) = q(z1|x) q(z2|z1))."""
        if self.top is None:
            return self.q.sample(self._conditioning(x, rows), eps)
        eps1, eps2 = self.top.split(eps)
        return self.top.extend(*self.q.sample(x, eps1), eps2)

    def kl_to_prior(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) per image in closed form, or None for a guide (or two layers) without one."""
        return self.q.kl_to_prior(self._conditioning(x, rows)) if self.top is None else None

    def location(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """One representative z per image (q's mean, or for the flow the image of its base mean; with two
        layers, z1's and then the mean of q(z2|z1) there)."""
        z1 = self.q.location(self._conditioning(x, rows))
        return z1 if self.top is None else torch.cat([z1, self.top.q.location(z1)], -1)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z): log N(z; 0, I), or with two layers log N(z2; 0, I) + log p(z1|z2)."""
        return analytic.standard_normal_log_prob(z) if self.top is None else self.top.log_prior(z)

    def prior_from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """z ~ p(z) from standard-normal noise eps (..., z_dim): eps itself, or with two layers (z1, z2) with
        z2 = eps2 and z1 = m(z2) + s(z2) * eps1."""
        return eps if self.top is None else self.top.from_noise(eps)

    def at(self, rows: torch.Tensor) -> "DataPoints":
        """This VAE with q fixed to the data points `rows` (rows of x to come), as an
        `analytic.LatentVariableModel`: how the local guide's q enters the hand-derived ELBO forms."""
        return DataPoints(self, rows)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        """p(x|z) as a Pyro distribution with event dim 1 (with two layers p(x|z1), z1 = z's first z_dim)."""
        logits = self.decoder(z[..., : self.config.z_dim])
        if self.config.likelihood == "bernoulli":
            return dist.Bernoulli(logits=logits).to_event(1)
        if self.config.likelihood == "continuous-bernoulli":
            return ContinuousBernoulli(logits=logits).to_event(1)  # exact log C (see distributions.py)
        return dist.Normal(torch.sigmoid(logits), self.sigma.expand(logits.shape)).to_event(1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, by the hand-derived formulas of `analytic` (two layers: p(x|z1))."""
        logits = self.decoder(z[..., : self.config.z_dim])
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

    def model(self, x: torch.Tensor, kl_weight: float | torch.Tensor = 1.0, rows: torch.Tensor | None = None) -> None:
        """p(z) p(x|z): z ~ N(0, I), x ~ p(x | decoder(z)), observed; with two layers z2 ~ N(0, I),
        z1 ~ p(z1|z2), x ~ p(x | decoder(z1)). (`rows` is the guide's.)"""
        top_dim = self.config.z_dim if self.top is None else self.config.z2_dim
        with self._images(x):
            with kl_weighted(kl_weight):
                prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([x.shape[0], top_dim])
                z = pyro.sample("z" if self.top is None else "z2", prior.to_event(1))
                if self.top is not None:
                    z = pyro.sample("z1", self.top.prior(z))
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: torch.Tensor, kl_weight: float | torch.Tensor = 1.0, rows: torch.Tensor | None = None) -> None:
        """q(z|x), the variational family: amortized by an encoder of x, or for the local guide the free
        parameters of the data points in rows `rows`; with two layers q(z1|x) q(z2|z1)."""
        with self._images(x), kl_weighted(kl_weight):
            z = pyro.sample("z" if self.top is None else "z1", self.approximate_posterior(x, rows))
            if self.top is not None:
                pyro.sample("z2", self.top.q(z))


def parameter_count(config: ModelConfig) -> int:
    """The number of parameters of the built-in VAE of `config`, counted on the meta device, where nothing is
    allocated; for the flow guide, whose Pyro layers cannot be built there, the diagonal guide's (fewer)."""
    if config.guide == "flow":
        config = replace(config, guide="diagonal")
    with torch.device("meta"):
        return sum(p.numel() for p in VAE(config).parameters())


def build_decoder(config: ModelConfig) -> nn.Module:
    """The built-in decoder: the MLP mirroring the encoder, or the transposed convolutions."""
    if config.network == "conv":
        if not config.image_shape:
            raise ConfigError("@network conv needs the images' shape: ModelConfig(image_shape=(C, H, W) or (H, W))")
        return ConvDecoder(config.z_dim, config.image_shape, config.channels, config.activation)
    return Decoder(config.z_dim, config.hidden, config.x_dim, config.activation)


def build_q(config: ModelConfig, encoder: nn.Module | None, guide: nn.Module | None) -> nn.Module:
    """q(z|x): the user's guide; the diagonal Gaussian on the user's encoder; or the built-in guide
    `config.guide` on the built-in encoder body (an MLP, or convolutions)."""
    if guide is not None:
        if encoder is not None:
            raise ConfigError("give an encoder or a guide, not both: a guide holds its own encoder")
        parts.check_guide(guide)
        return guide
    if encoder is not None:
        if config.guide != "diagonal":
            raise ConfigError(
                f"your encoder gives (loc, scale): it makes the diagonal guide, not @guide {config.guide}; "
                "for another family write a guide (guides.Guide) and pass guide=..."
            )
        return guides.DiagonalNormal(parts.ImageEncoder(encoder, config.shape, config.z_dim))
    body, features = encoder_body(config) if config.guide != "local" else (None, 0)
    rows = config.local_points + config.local_test_points
    return build_guide(config.guide, body, features, config.z_dim, config.flow_layers, rows)


def encoder_body(config: ModelConfig) -> tuple[nn.Module, int]:
    """x -> features h(x) of the built-in encoder, and their number: the MLP's last hidden layer (x itself
    without hidden layers), or the convolutions' flattened maps."""
    if config.network == "conv":
        body = ConvBody(config.image_shape, config.channels, config.activation)
        return body, body.features
    return mlp([config.x_dim, *config.hidden], config.activation), (
        config.hidden[-1] if config.hidden else config.x_dim
    )


def has_distribution(guide: nn.Module) -> bool:
    """Whether the guide's forward(x) returns q(z|x) as a distribution (every built-in guide's does)."""
    return type(guide).forward is not nn.Module.forward


def kl_weighted(kl_weight: float | torch.Tensor) -> poutine.messenger.Messenger:
    """Weights the latent sites' log-densities (and so the KL term) by the KL weight: `poutine.scale`, or for
    a weight of 0 `poutine.mask(False)`, which drops them (Pyro refuses a scale of 0)."""
    if not isinstance(kl_weight, torch.Tensor) and kl_weight == 0:
        return poutine.mask(mask=False)
    return poutine.scale(scale=kl_weight)


@dataclass(frozen=True)
class DataPoints:
    """A VAE whose q is fixed to the data points in rows `rows` (see `VAE.at`)."""

    vae: VAE
    rows: torch.Tensor

    @property
    def z_dim(self) -> int:
        return self.vae.z_dim

    def sample_q(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.sample_q(x, eps, self.rows)

    def kl_to_prior(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.vae.kl_to_prior(x, self.rows)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.log_prior(z)

    def prior_from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        return self.vae.prior_from_noise(eps)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.vae.log_likelihood(x, z)
