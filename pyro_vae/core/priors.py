"""The prior p(z) of the built-in VAE: the standard normal, or a learned one (`--prior`):

    normal   p(z) = N(0, I)
    mog      p(z) = sum_k pi_k N(z; m_k, diag s_k^2)             K = prior_components; pi, m, s learned
    vamp     p(z) = (1/K) sum_k q(z | u_k)                        K learned pseudo-inputs u_k (Tomczak and
                                                                  Welling 2018), q the diagonal guide itself

With two stochastic layers the learned prior is the top layer's, p(z2); the VampPrior's components are then
q(z2 | z1) at z1 = the location of q(z1 | u_k) (our guide runs x -> z1 -> z2).

Each learned prior is a mixture of K diagonal Gaussians, (log pi_k, m_k, s_k), whose density is written by
hand (`analytic.mixture_log_prob`, checked against torch's `MixtureSameFamily`) and given to Pyro as a
`DiagonalMixture`; its draws come from the standard-normal noise every sampler here passes
(`mixture_from_noise`).
"""

from __future__ import annotations

import math
from typing import Callable

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from pyro_vae.core import analytic

PRIORS = ("normal", "mog", "vamp")
PSEUDO_INPUT_INIT = (0.05, 0.01)  # the pseudo-inputs' first values ~ N(mean, sd), clipped to [0, 1], as the authors'


class MixturePrior(nn.Module):
    """p(z) = sum_k pi_k N(z; m_k, diag s_k^2), every weight, mean and scale learned (means first spread as
    N(0, I) draws, scales 1, weights equal)."""

    def __init__(self, z_dim: int, components: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, z_dim))

    def components(self, posterior: Callable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log pi (K,), means (K, z_dim), scales (K, z_dim))."""
        return self.logits.log_softmax(0), self.means, self.log_scales.exp()


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k): the guide's own q at K pseudo-inputs u_k = clip(w_k, 0, 1), the w_k
    learned (images of the data's shape, as the authors' hardtanh layer makes them)."""

    def __init__(self, x_dim: int, components: int):
        super().__init__()
        mean, sd = PSEUDO_INPUT_INIT
        self.pseudo_inputs = nn.Parameter(mean + sd * torch.randn(components, x_dim))

    def components(self, posterior: Callable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log 1/K, the means and scales of `posterior` (u -> q(z|u), a diagonal Gaussian) at the K
        pseudo-inputs)."""
        normal = posterior(self.pseudo_inputs.clamp(0, 1)).base_dist  # Independent(Normal(loc, scale), 1), batch (K,)
        k = normal.loc.shape[0]
        return normal.loc.new_full((k,), -math.log(k)), normal.loc, normal.scale


def build_prior(name: str, x_dim: int, z_dim: int, components: int) -> nn.Module | None:
    """The learned prior `name` (None for the standard normal, which has no parameters)."""
    if name == "mog":
        return MixturePrior(z_dim, components)
    if name == "vamp":
        return VampPrior(x_dim, components)
    return None


class DiagonalMixture(dist.TorchDistribution):
    """sum_k pi_k N(m_k, diag s_k^2) as a Pyro distribution (event shape (z_dim,)): its log-density by hand
    (`analytic.mixture_log_prob`, memory of (..., K), where `MixtureSameFamily` holds (..., K, z_dim)), its
    draws from noise (`mixture_from_noise`)."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, log_weights: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, batch_shape=torch.Size()):
        self.log_weights, self.loc, self.scale = log_weights, loc, scale
        super().__init__(torch.Size(batch_shape), loc.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None) -> "DiagonalMixture":
        return DiagonalMixture(self.log_weights, self.loc, self.scale, torch.Size(batch_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return analytic.mixture_log_prob(value, self.log_weights, self.loc, self.scale)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return mixture_from_noise(eps, self.log_weights, self.loc, self.scale).detach()


def mixture_from_noise(
    eps: torch.Tensor, log_weights: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """z ~ the mixture, from standard-normal noise eps (..., z_dim) alone, by inverting CDFs (in float64):

        u = Phi(eps_1) ~ U(0, 1);   k = the component whose cumulative weight interval holds u;
        eps_1' = Phi^-1((u - c_{k-1}) / pi_k) ~ N(0, 1), independent of k;   z = m_k + s_k * (eps_1', eps_2, ...)

    so every sampler that passes noise (AIS's starts, prior samples) draws the mixture exactly."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64, device=eps.device), 1.0)
    u = normal.cdf(eps[..., 0].double())
    edges = log_weights.double().softmax(0).cumsum(0)
    k = torch.searchsorted(edges, u.contiguous(), right=True).clamp(max=edges.shape[0] - 1)
    low = torch.where(k > 0, edges[(k - 1).clamp(min=0)], 0.0)
    within = ((u - low) / (edges[k] - low)).clamp(1e-12, 1 - 1e-12)
    first = normal.icdf(within).to(eps.dtype)
    noise = torch.cat([first.unsqueeze(-1), eps[..., 1:]], -1)
    return loc[k] + scale[k] * noise
