"""Variational families q(z|x), amortized by an encoder network.

Each guide maps a batch of images to
- `forward(x)`: a Pyro distribution over z (batch shape (batch,), event dim 1), what the guide samples;
- `sample(x, eps)`: z and log q(z|x) for standard-normal noise eps of shape (S, batch, z_dim), by the
  guide's own reparameterization (the hand-derived path the ELBO forms and the evaluation use);
- `kl_to_prior(x)`: KL(q(z|x) || N(0, I)) in closed form, or None where there is none;
- `location(x)`: one representative z per image (for figures).

The `local` guide is the exception: it has no encoder, and its methods take the data points' row numbers
in its table where the others take their pixels (`VAE` passes the one or the other).

| name              | q(z|x)                                   | closed-form KL | `TraceMeanField_ELBO`          |
|-------------------|------------------------------------------|----------------|--------------------------------|
| `diagonal`        | N(mu(x), diag sigma(x)^2)                | yes            | exact KL                       |
| `full-covariance` | N(mu(x), L(x) L(x)^T), L lower-triangular | yes            | exact KL (registered below)    |
| `flow`            | diagonal Gaussian, then inverse-autoregressive layers conditioned on x | no | falls back to Monte Carlo |
| `local`           | N(mu_i, diag sigma_i^2), free parameters per data point i (no encoder) | yes | exact KL |
| `delta`           | the point mass at mu(x): a deterministic encoder (an autoencoder's) | no (infinite) | Monte Carlo |

The `delta` guide follows Pyro's `Delta`: log q(z|x) = 0 at its point, so the ELBO forms give
log p(x|mu(x)) + log p(mu(x)), the joint density at the code, which bounds nothing; the true KL from a
point mass to N(0, I) is infinite. With beta = 0 only log p(x|mu(x)) remains: an autoencoder's loss.
"""

from __future__ import annotations

from typing import Protocol

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.distributions import constraints, register_kl

from pyro_vae.core import analytic
from pyro_vae.core.networks import Encoder
from pyro_vae.errors import ConfigError


class _DiagonalGaussian(nn.Module):
    """q = N(mu, diag sigma^2), sampled by z = mu + sigma * eps; subclasses say where (mu, sigma) come from."""

    def loc_and_scale(self, given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, given: torch.Tensor) -> dist.Distribution:
        return dist.Normal(*self.loc_and_scale(given)).to_event(1)

    def sample(self, given: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale = self.loc_and_scale(given)
        z = analytic.reparameterize(loc, scale, eps)
        return z, analytic.diagonal_normal_log_prob(z, loc, scale)

    def kl_to_prior(self, given: torch.Tensor) -> torch.Tensor:
        """KL(q || N(0, I)) per image, in closed form."""
        return analytic.kl_diagonal_normal_standard_normal(*self.loc_and_scale(given))

    def location(self, given: torch.Tensor) -> torch.Tensor:
        return self.loc_and_scale(given)[0]


class DiagonalNormal(_DiagonalGaussian):
    """q(z|x) = N(mu(x), diag sigma(x)^2), (mu, sigma) = encoder(x): the built-in `Encoder`, or any module
    of the user's that maps a batch of images to two (batch, z_dim) tensors, sigma > 0."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def loc_and_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)


class FullCovarianceNormal(nn.Module):
    """q(z|x) = N(mu(x), L(x) L(x)^T): the encoder's head gives mu, the log of L's diagonal (so it is
    positive) and L's strictly lower triangle; sampled by z = mu + L eps, so
    log q(z|x) = -1/2 (d log 2 pi + ||eps||^2) - sum log diag L."""

    def __init__(self, body: nn.Module, features: int, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.body = body
        self.head = nn.Linear(features, z_dim + z_dim * (z_dim + 1) // 2)
        self.register_buffer("tril_index", torch.tril_indices(z_dim, z_dim), persistent=False)

    def loc_and_scale_tril(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, entries = self.head(self.body(x)).split([self.z_dim, self.z_dim * (self.z_dim + 1) // 2], dim=-1)
        square = loc.new_zeros(*loc.shape[:-1], self.z_dim, self.z_dim)
        square[..., self.tril_index[0], self.tril_index[1]] = entries
        return loc, square.tril(-1) + torch.diag_embed(square.diagonal(dim1=-2, dim2=-1).exp())

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        loc, scale_tril = self.loc_and_scale_tril(x)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def sample(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale_tril = self.loc_and_scale_tril(x)
        z = loc + (scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return z, analytic.standard_normal_log_prob(eps) - log_det

    def kl_to_prior(self, x: torch.Tensor) -> torch.Tensor:
        return analytic.kl_normal_standard_normal(*self.loc_and_scale_tril(x))

    def location(self, x: torch.Tensor) -> torch.Tensor:
        return self.loc_and_scale_tril(x)[0]


class InverseAutoregressiveFlow(nn.Module):
    """z_0 ~ N(mu(x), diag sigma(x)^2), then z_{i+1} = f_i(z_i; h(x)) for `flow_layers` affine
    inverse-autoregressive transforms conditioned on the encoder's last hidden layer h(x):
    log q(z_K|x) = log N(z_0; mu, diag sigma^2) - sum_i log |det df_i/dz_i|. No closed-form KL."""

    def __init__(self, body: nn.Module, features: int, z_dim: int, flow_layers: int = 2):
        super().__init__()
        self.encoder = Encoder(body, features, z_dim)
        self.flows = nn.ModuleList(
            T.conditional_affine_autoregressive(z_dim, features, hidden_dims=[4 * z_dim]) for _ in range(flow_layers)
        )

    def _base(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        loc, scale, features = self.encoder.with_features(x)
        return loc, scale, [flow.condition(features) for flow in self.flows]

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        loc, scale, transforms = self._base(x)
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), transforms)

    def sample(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale, transforms = self._base(x)
        z = analytic.reparameterize(loc, scale, eps)
        log_q = analytic.diagonal_normal_log_prob(z, loc, scale)
        for transform in transforms:
            z_next = transform(z)
            log_q = log_q - transform.log_abs_det_jacobian(z, z_next)
            z = z_next
        return z, log_q

    def kl_to_prior(self, x: torch.Tensor) -> None:
        return None

    def location(self, x: torch.Tensor) -> torch.Tensor:
        """The image of the base mean mu(x) under the flow."""
        z, _, transforms = self._base(x)
        for transform in transforms:
            z = transform(z)
        return z


class LocalGuide(_DiagonalGaussian):
    """q(z|x_i) = N(mu_i, diag sigma_i^2) with free (mu_i, log sigma_i) for each of `points` fixed data
    points: the non-amortized family, against which the encoder's amortization gap is measured. The
    parameters are rows of a sparse embedding, so a step's gradient (and a sparse optimizer's update)
    touches only the rows of its batch; every row starts at the prior, mu_i = 0 and sigma_i = 1."""

    def __init__(self, points: int, z_dim: int):
        super().__init__()
        self.table = nn.Embedding(points, 2 * z_dim, sparse=True)
        nn.init.zeros_(self.table.weight)

    def loc_and_scale(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self.table(index).chunk(2, dim=-1)
        return loc, log_scale.exp()


class PointMass(nn.Module):
    """q(z|x) = delta(z - mu(x)): the deterministic encoder of an autoencoder, mu(x) from an MLP and one
    linear head. Its sample is mu(x) whatever the noise, with log q = 0 at it (Pyro's `Delta`)."""

    def __init__(self, body: nn.Module, features: int, z_dim: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(features, z_dim)

    def location(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        return dist.Delta(self.location(x), event_dim=1)

    def sample(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.location(x).expand(eps.shape)
        return z, z.new_zeros(eps.shape[:-1])

    def kl_to_prior(self, x: torch.Tensor) -> None:
        return None


class Guide(Protocol):
    """What a VAE asks of a variational family q(z|x): a torch module with these methods (write your own
    and pass it as `VAE(config, guide=...)` or `pyro_vae.train(config, guide=...)`). x is a batch of images
    as rows of pixels (batch, D); eps is standard-normal noise (..., batch, z_dim)."""

    def sample(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = g(eps; x), reparameterized, and log q(z|x), each with eps's leading dims."""

    def kl_to_prior(self, x: torch.Tensor) -> torch.Tensor | None:
        """KL(q(z|x) || N(0, I)) per image in closed form, or None (then estimated from samples)."""

    def location(self, x: torch.Tensor) -> torch.Tensor:
        """One representative z per image (for reconstructions and figures)."""


class SampledPosterior(dist.TorchDistribution):
    """q(z|x) for Pyro, from a guide that has `sample` but no `forward(x)` returning a distribution: each
    draw is g(eps; x) with fresh noise, and its log-density is the one `sample` returned with it, so it is
    known at the guide's own draws only (all that the pathwise estimators ask for). `kl_divergence` to the
    N(0, I) prior is the guide's closed form where it has one."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, guide: Guide, x: torch.Tensor, z_dim: int):
        self.guide, self.x, self.z_dim = guide, x, z_dim
        self._drawn: tuple[torch.Tensor, torch.Tensor] | None = None
        super().__init__(x.shape[:-1], torch.Size([z_dim]), validate_args=False)

    def expand(self, batch_shape, _instance=None) -> SampledPosterior:
        """The same q for images broadcast to `batch_shape` (Pyro's particle and batch plates)."""
        return SampledPosterior(self.guide, self.x.expand(*batch_shape, self.x.shape[-1]), self.z_dim)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        eps = torch.randn(*sample_shape, *self.batch_shape, self.z_dim, dtype=self.x.dtype, device=self.x.device)
        self._drawn = self.guide.sample(self.x, eps)
        return self._drawn[0]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._drawn is None or value is not self._drawn[0]:
            raise NotImplementedError(
                "this guide gives log q(z|x) only at its own samples (it has no forward(x) returning a "
                "distribution), so it cannot score other values of z"
            )
        return self._drawn[1]


@register_kl(SampledPosterior, dist.Independent)
def _kl_sampled_posterior_to_prior(q: SampledPosterior, p: dist.Independent) -> torch.Tensor:
    """KL(q || N(0, I)) by the guide's closed form, if it has one (else Pyro estimates it from samples)."""
    kl = q.guide.kl_to_prior(q.x) if hasattr(q.guide, "kl_to_prior") else None
    if kl is None:
        raise NotImplementedError
    return kl


@register_kl(dist.MultivariateNormal, dist.Independent)
def _kl_full_covariance_to_diagonal_normal(q: dist.MultivariateNormal, p: dist.Independent) -> torch.Tensor:
    """KL(N(mu1, L1 L1^T) || N(mu2, diag sigma2^2)) by `analytic.kl_normal_normal`, so that
    `TraceMeanField_ELBO` uses the closed form for the full-covariance guide against the N(0, I) prior."""
    if not isinstance(p.base_dist, dist.Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    loc_p, scale_p = p.base_dist.loc, p.base_dist.scale
    shape = torch.broadcast_shapes(q.loc.shape, loc_p.shape)
    return analytic.kl_normal_normal(
        q.loc.expand(shape),
        q.scale_tril.expand(*shape, shape[-1]),
        loc_p.expand(shape),
        torch.diag_embed(scale_p.expand(shape)),
    )


GUIDES = {
    "diagonal": DiagonalNormal,
    "full-covariance": FullCovarianceNormal,
    "flow": InverseAutoregressiveFlow,
    "local": LocalGuide,
    "delta": PointMass,
}


def build_guide(
    name: str, body: nn.Module | None, features: int, z_dim: int, flow_layers: int = 2, local_rows: int = 0
) -> nn.Module:
    """The guide `name` on an encoder `body` (x -> `features` per image; none for the local guide)."""
    if name not in GUIDES:
        raise ConfigError(f"unknown guide {name!r}; choose one of: {', '.join(GUIDES)}")
    if name == "local":
        return LocalGuide(local_rows, z_dim)
    if name == "diagonal":
        return DiagonalNormal(Encoder(body, features, z_dim))
    if name == "flow":
        return InverseAutoregressiveFlow(body, features, z_dim, flow_layers)
    return GUIDES[name](body, features, z_dim)
