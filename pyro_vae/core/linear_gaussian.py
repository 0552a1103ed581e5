"""The linear-Gaussian latent variable model, where everything the VAE approximates is exact.

    p(z) = N(0, I_k),  p(x|z) = N(W z + b, sigma^2 I_d)

gives the marginal p(x) = N(b, W W^T + sigma^2 I) and the posterior p(z|x) = N(m, S) with
S = (I + W^T W / sigma^2)^-1 and m = S W^T (x - b) / sigma^2. With these, the identity
log p(x) = ELBO(q) + KL(q(z) || p(z|x)) can be checked to float precision for any Gaussian q.
"""

from __future__ import annotations

import torch

from pyro_vae.core import analytic


def log_marginal(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p(x) = log N(x; b, C), C = W W^T + sigma^2 I
    = -1/2 (d log 2 pi + log det C + (x - b)^T C^-1 (x - b)), by the Cholesky factor of C."""
    d = W.shape[0]
    C = W @ W.T + sigma**2 * torch.eye(d, dtype=W.dtype, device=W.device)
    L = torch.linalg.cholesky(C)
    r = torch.linalg.solve_triangular(L, (x - b).unsqueeze(-1), upper=False).squeeze(-1)
    log_det = 2 * L.diagonal().log().sum()
    return -0.5 * (d * analytic.LOG_2PI + log_det + r.pow(2).sum(-1))


def posterior(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p(z|x) = N(m, S): S = (I + W^T W / sigma^2)^-1, m = S W^T (x - b) / sigma^2.
    Returns (m, cholesky factor of S); S is the same for every x."""
    k = W.shape[1]
    precision = torch.eye(k, dtype=W.dtype, device=W.device) + W.T @ W / sigma**2
    S = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    m = (x - b) @ W @ S / sigma**2  # S is symmetric: (S W^T (x - b))^T = (x - b)^T W S
    return m, torch.linalg.cholesky(S).expand(*x.shape[:-1], k, k)


def elbo(
    x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, sigma: float, loc: torch.Tensor, scale_tril: torch.Tensor
) -> torch.Tensor:
    """ELBO(q) = E_q[log p(x|z)] - KL(q || p(z)) for q = N(mu, L L^T), all in closed form:
    E_q[log p(x|z)] = -d/2 log(2 pi sigma^2) - (||x - W mu - b||^2 + ||W L||_F^2) / (2 sigma^2)."""
    d = W.shape[0]
    residual = x - loc @ W.T - b
    spread = (W @ scale_tril).pow(2).sum((-2, -1))
    expected_log_lik = -0.5 * d * (analytic.LOG_2PI + 2 * torch.log(torch.as_tensor(sigma, dtype=x.dtype))) - (
        residual.pow(2).sum(-1) + spread
    ) / (2 * sigma**2)
    return expected_log_lik - analytic.kl_normal_standard_normal(loc, scale_tril)
