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

from pyro_vae.core import analytic, guides, parts, priors
from pyro_vae.core.distributions import ContinuousBernoulli
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.two_layer import TopLayer
from pyro_vae.core.vae_networks import build_decoder, build_q
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
        top_dim = config.z_dim if self.top is None else config.z2_dim  # the learned prior is the top layer's
        self.prior = priors.build_prior(config.prior, config.x_dim, top_dim, config.prior_components)
        if config.prior == "vamp" and not isinstance(self.q, guides.DiagonalNormal):
            raise ConfigError("@prior vamp reads q(z|u) as a diagonal Gaussian; your guide is not the diagonal one")
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
        """KL(q(z|x) || p(z)) per image in closed form, or None for a guide (two layers, a learned prior)
        without one."""
        if self.top is not None or self.prior is not None:
            return None
        return self.q.kl_to_prior(self._conditioning(x, rows))

    def location(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """One representative z per image (q's mean, or for the flow the image of its base mean; with two
        layers, z1's and then the mean of q(z2|z1) there)."""
        z1 = self.q.location(self._conditioning(x, rows))
        return z1 if self.top is None else torch.cat([z1, self.top.q.location(z1)], -1)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z): log p_top(z) of the top layer's prior (N(0, I), or a learned prior's mixture density,
        `analytic.mixture_log_prob`), and with two layers log p_top(z2) + log p(z1|z2)."""
        return self.top_log_prior(z) if self.top is None else self.top.log_prior(z, self.top_log_prior)

    def top_log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_top): log N(z_top; 0, I), or the learned mixture's density."""
        if self.prior is not None:
            return analytic.mixture_log_prob(z, *self.prior.components(self.top_posterior))
        return analytic.standard_normal_log_prob(z)

    def prior_from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """z ~ p(z) from standard-normal noise eps (..., z_dim): the top layer's draw (eps itself, or a learned
        prior's, `priors.mixture_from_noise`), and with two layers z1 = m(z2) + s(z2) * eps1 below it."""
        return self.top_from_noise(eps) if self.top is None else self.top.from_noise(eps, self.top_from_noise)

    def top_from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """z_top ~ p(z_top) from standard-normal noise: eps itself, or the learned mixture's draw."""
        if self.prior is not None:
            return priors.mixture_from_noise(eps, *self.prior.components(self.top_posterior))
        return eps

    def top_posterior(self, u: torch.Tensor) -> dist.Distribution:
        """q(z_top | u) as a diagonal Gaussian, what the VampPrior mixes at its pseudo-inputs u: q(z|u), or
        with two layers q(z2 | z1) at z1 = the location of q(z1|u)."""
        return self.q(u) if self.top is None else self.top.q(self.q.location(u))

    def prior_distribution(self, x: torch.Tensor, size: int) -> dist.Distribution:
        """p(z_top) for a batch like x, as the model's site draws it: N(0, I) of `size` per image, or the learned
        mixture (`priors.DiagonalMixture`)."""
        if self.prior is not None:
            return priors.DiagonalMixture(*self.prior.components(self.top_posterior)).expand([x.shape[0]])
        return dist.Normal(x.new_zeros(()), x.new_ones(())).expand([x.shape[0], size]).to_event(1)

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
        """p(z) p(x|z): z ~ p(z) (N(0, I), or the learned prior), x ~ p(x | decoder(z)), observed; with two layers z2 ~ N(0, I),
        z1 ~ p(z1|z2), x ~ p(x | decoder(z1)). (`rows` is the guide's.)"""
        top_dim = self.config.z_dim if self.top is None else self.config.z2_dim
        with self._images(x):
            with kl_weighted(kl_weight):
                z = pyro.sample("z" if self.top is None else "z2", self.prior_distribution(x, top_dim))
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
