"""Hand-derived closed forms of the VAE derivation, one function per equation.

Every function is batched over leading dimensions and runs on any device and dtype. Sums run over
the last (event) dimension, so a result has the batch shape of its inputs. Tests hold each against
torch.distributions and Pyro's own estimators (tests/test_analytic.py, tests/test_elbo.py).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def reparameterize(loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): a sample of N(mu, diag sigma^2) that is differentiable
    in (mu, sigma), with dz/dphi = dmu/dphi + eps * dsigma/dphi."""
    return loc + scale * eps


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) = -1/2 (d log 2 pi + ||z||^2)."""
    return -0.5 * (z.shape[-1] * LOG_2PI + z.pow(2).sum(-1))


def mixture_log_prob(
    z: torch.Tensor, log_weights: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """log p(z) of a mixture of K diagonal Gaussians, per z (..., d) -> (...):

        log sum_k pi_k N(z; m_k, diag s_k^2) = logsumexp_k [log pi_k - 1/2 sum_d (log 2 pi + 2 log s_kd
                                                                 + (z_d - m_kd)^2 / s_kd^2)]

    with the squares expanded, sum_d (z_d - m_kd)^2 / s_kd^2 = z^2 . s_k^-2 - 2 z . (m_k s_k^-2) + m_k^2 . s_k^-2,
    as three products with the K components: memory of (..., K), not (..., K, d)."""
    precision = scale.pow(-2)
    squares = z.pow(2) @ precision.T - 2 * z @ (loc * precision).T + (loc.pow(2) * precision).sum(-1)
    normalizer = z.shape[-1] * LOG_2PI + 2 * scale.log().sum(-1)
    return torch.logsumexp(log_weights - 0.5 * (normalizer + squares), -1)


def diagonal_normal_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag sigma^2) = -1/2 sum(log 2 pi + 2 log sigma + ((z - mu) / sigma)^2)."""
    return -0.5 * (LOG_2PI + 2 * scale.log() + ((z - loc) / scale).pow(2)).sum(-1)


def kl_diagonal_normal_standard_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum(sigma^2 + mu^2 - 1 - log sigma^2)."""
    return 0.5 * (scale.pow(2) + loc.pow(2) - 1 - 2 * scale.log()).sum(-1)


def kl_normal_standard_normal(loc: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, Sigma) || N(0, I)) = 1/2 (tr Sigma + mu^T mu - d - log det Sigma), Sigma = L L^T.

    With the Cholesky factor L: tr Sigma = ||L||_F^2 and log det Sigma = 2 sum log diag L.
    """
    trace = scale_tril.pow(2).sum((-2, -1))
    log_det = 2 * scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + loc.pow(2).sum(-1) - loc.shape[-1] - log_det)


def kl_normal_normal(
    loc_q: torch.Tensor, scale_tril_q: torch.Tensor, loc_p: torch.Tensor, scale_tril_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu1, Sigma1) || N(mu2, Sigma2))
    = 1/2 (log det Sigma2 / det Sigma1 - d + tr(Sigma2^-1 Sigma1) + (mu2 - mu1)^T Sigma2^-1 (mu2 - mu1)).

    With Sigma1 = L1 L1^T and Sigma2 = L2 L2^T, and no explicit inverse:
    tr(Sigma2^-1 Sigma1) = ||L2^-1 L1||_F^2 and the Mahalanobis term is ||L2^-1 (mu2 - mu1)||^2,
    both by triangular solves; log det Sigma = 2 sum log diag L. The four arguments' batch shapes (all but
    the last dimension of a mean, the last two of a factor) broadcast against each other.
    """
    d = loc_q.shape[-1]
    batch = torch.broadcast_shapes(loc_q.shape[:-1], loc_p.shape[:-1], scale_tril_q.shape[:-2], scale_tril_p.shape[:-2])
    L1, L2 = scale_tril_q.expand(*batch, d, d), scale_tril_p.expand(*batch, d, d)
    diff = (loc_p - loc_q).expand(*batch, d).unsqueeze(-1)
    trace = torch.linalg.solve_triangular(L2, L1, upper=False).pow(2).sum((-2, -1))
    mahalanobis = torch.linalg.solve_triangular(L2, diff, upper=False).pow(2).sum((-2, -1))
    log_det_ratio = 2 * (L2.diagonal(dim1=-2, dim2=-1).log().sum(-1) - L1.diagonal(dim1=-2, dim2=-1).log().sum(-1))
    return 0.5 * (log_det_ratio - d + trace + mahalanobis)


def softplus(logits: torch.Tensor) -> torch.Tensor:
    """softplus(l) = log(1 + e^l), to float64 precision for every l: torch's softplus returns l itself above
    its threshold (20 by default), dropping log1p(e^-l), about 2e-9 at l = 20; with the threshold at 40 the
    dropped part, e^-40 = 4e-18, lies below float64's resolution there (about 7e-15)."""
    return F.softplus(logits, threshold=40.0)


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(l)) = sum(x log sigmoid(l) + (1 - x) log sigmoid(-l))
    = sum(x l) - sum(softplus(l)), the stable form from logits l. The first sum is a dot product, taken
    without an elementwise temporary (for S samples of z per image, logits has shape (S, batch, D))."""
    return torch.einsum("...d,...d->...", x, logits) - softplus(logits).sum(-1)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """log N(x; f(z), sigma^2 I) = -d/2 log(2 pi sigma^2) - ||x - f(z)||^2 / (2 sigma^2).

    `sigma` is a scalar (a float or a 0-d tensor, fixed or learned) shared by all d pixels.
    """
    sigma = torch.as_tensor(sigma, dtype=mean.dtype, device=mean.device)
    d = x.shape[-1]
    return -0.5 * d * (LOG_2PI + 2 * sigma.log()) - (x - mean).pow(2).sum(-1) / (2 * sigma.pow(2))


def continuous_bernoulli_log_normalizer(logits: torch.Tensor, taylor_below: float = 1e-2) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(l), elementwise:

    C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2),
    log C = log 2 + l^2 / 12 - 7 l^4 / 1440 + O(l^6) near l = 0 (lambda = 1/2), where the closed form
    is 0/0; the series is used for |l| < `taylor_below` (its error there is below 1e-14).
    """
    small = logits.abs() < taylor_below
    safe = torch.where(small, torch.ones_like(logits), logits.abs())
    exact = safe.log() - torch.tanh(safe / 2).log()
    l2 = logits.pow(2)
    series = math.log(2.0) + l2 / 12 - 7 * l2.pow(2) / 1440
    return torch.where(small, series, exact)


def continuous_bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log CB(x; lambda) = log C(lambda) + x log lambda + (1 - x) log(1 - lambda)
    = log C(l) + x l - softplus(l), elementwise, for x in [0, 1] and lambda = sigmoid(l)."""
    return continuous_bernoulli_log_normalizer(logits) + x * logits - softplus(logits)


def continuous_bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum over pixels of `continuous_bernoulli_log_prob`."""
    return continuous_bernoulli_log_prob(x, logits).sum(-1)


class LatentVariableModel(Protocol):
    """What the ELBO forms need: a guide that turns standard-normal noise into z ~ q(z|x) with its
    log-density, its closed-form KL to the prior where one exists, the prior's log-density log p(z)
    (`standard_normal_log_prob` for p(z) = N(0, I)) and its draws from standard-normal noise (eps itself
    for N(0, I)), and log p(x|z)."""

    z_dim: int

    def sample_q(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def kl_to_prior(self, x: torch.Tensor) -> torch.Tensor | None: ...

    def log_prior(self, z: torch.Tensor) -> torch.Tensor: ...

    def prior_from_noise(self, eps: torch.Tensor) -> torch.Tensor: ...

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...


def elbo_analytic_kl(vae: LatentVariableModel, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), per image, with the expectation estimated by
    the S reparameterized samples z_s (for the diagonal guide z_s = mu(x) + sigma(x) * eps_s; eps of shape
    (S, batch, z_dim)) and the KL term exact. Returns shape (batch,)."""
    kl = vae.kl_to_prior(x)
    if kl is None:
        raise ValueError("this guide has no closed-form KL to the prior; use elbo_monte_carlo")
    z, _ = vae.sample_q(x, eps)
    return vae.log_likelihood(x, z).mean(0) - kl


def elbo_terms(vae: LatentVariableModel, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ELBO's two terms per image, ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)): the expected
    log-likelihood (minus the distortion) estimated by the S samples z_s made from eps (S, batch, z_dim),
    and the KL (the rate), exact where the guide has a closed form, else estimated by the same samples as
    E_q[log q(z|x) - log p(z)]. Returns two tensors of shape (batch,)."""
    z, log_q = vae.sample_q(x, eps)
    kl = vae.kl_to_prior(x)
    if kl is None:
        kl = (log_q - vae.log_prior(z)).mean(0)
    return vae.log_likelihood(x, z).mean(0), kl


def log_importance_weights(vae: LatentVariableModel, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) for the S reparameterized samples z_s of
    q(z|x) made from eps (shape (S, batch, z_dim)). Returns shape (S, batch)."""
    z, log_q = vae.sample_q(x, eps)
    return vae.log_likelihood(x, z) + vae.log_prior(z) - log_q


def elbo_monte_carlo(vae: LatentVariableModel, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """ELBO(x) = E_q[log p(x|z) + log p(z) - log q(z|x)] = E_q[log w], per image, every term estimated
    by the S samples of `log_importance_weights`. Returns shape (batch,)."""
    return log_importance_weights(vae, x, eps).mean(0)


def iwae_bound(vae: LatentVariableModel, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The importance-weighted bound L_K(x) = log (1/K) sum_k w_k <= log p(x) (Burda et al. 2016), per
    image, with the K = eps.shape[0] samples of `log_importance_weights`; L_1 is the ELBO's estimate, and
    L_K rises to log p(x) as K grows. Returns shape (batch,)."""
    return log_mean_exp(log_importance_weights(vae, x, eps))


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(log w_k) over the K = log_w.shape[dim] entries along `dim`, by logsumexp (no
    overflow): with log w_k = log p(x, z_k) - log q(z_k|x), the IWAE bound L_K and the importance-sampled
    log p(x). The one home of that equation: every estimator and evaluation calls this."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])
