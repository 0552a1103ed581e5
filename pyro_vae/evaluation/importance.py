"""How far an importance-sampling estimate log p^(x) = log (1/K) sum_k w_k can be trusted, per image, from
its K log-weights (dimension 0 of every argument):

- the jackknife variance of log p^, which keeps the logarithm the delta method linearizes away, and so
  grows when a few heavy weights carry the estimate (benchmarks/log_px_calibration.py: calibrated on a
  trained 2-D VAE, where the delta method's standard error is 2 to 2.7 times too small);
- the effective sample size (sum w)^2 / sum w^2;
- the Pareto k-hat of the weights' upper tail (Vehtari, Simpson, Gelman, Yao and Gabry, "Pareto smoothed
  importance sampling"): above 0.7 the weights' variance may be infinite and the estimate unreliable.
"""

from __future__ import annotations

import math

import torch

from pyro_vae.core import analytic

UNRELIABLE_K = 0.7  # Vehtari et al.: above this k-hat, importance sampling is unreliable


def jackknife_variance(log_w: torch.Tensor) -> torch.Tensor:
    """Var[log p^] ~ (K-1)/K sum_k (L_(k) - mean_j L_(j))^2, with L_(k) = log((S - w_k) / (K - 1)) the
    estimate without sample k (S = sum w), computed as log(1 - w_k / S) + const. Zero for K = 1."""
    k = log_w.shape[0]
    if k == 1:
        return torch.zeros_like(log_w[0])
    share = (log_w - torch.logsumexp(log_w, 0)).exp()  # w_k / S
    left_out = torch.log1p(-share.clamp(max=1 - 1e-15))  # L_(k) - L, up to a constant
    return (k - 1) / k * (left_out - left_out.mean(0)).pow(2).sum(0)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """ESS = (sum w)^2 / sum w^2 = 1 / sum_k (w_k / S)^2: K for equal weights, 1 when one weight is all."""
    return 1 / (log_w - torch.logsumexp(log_w, 0)).exp().pow(2).sum(0)


def pareto_k(log_w: torch.Tensor, prior_weight: float = 10.0) -> torch.Tensor:
    """k-hat of the generalized Pareto distribution fitted to the M = floor(min(K / 5, 3 sqrt(K))) largest
    weights' excesses over the next one, by Zhang and Stephens' (2009) posterior-mean estimator with
    Vehtari et al.'s weakly informative prior (k-hat shrunk towards 0.5 with weight 10 against M), as PSIS
    computes it. NaN where M < 5 (K < 25) or where the tail is flat (no excess over the threshold)."""
    k = log_w.shape[0]
    m = int(min(0.2 * k, 3 * math.sqrt(k)))
    if m < 5:
        return torch.full_like(log_w[0], float("nan"), dtype=torch.float64)
    top = log_w.double().topk(m + 1, dim=0).values  # descending, (M + 1, images)
    w = (top - top[0]).exp()
    x = (w[:m] - w[m]).flip(0)  # the M excesses over the threshold, ascending
    grid_size = 30 + int(math.sqrt(m))
    j = torch.arange(1, grid_size + 1, dtype=torch.float64, device=x.device)
    quartile = x[int(m / 4 + 0.5) - 1]
    b = (1 - torch.sqrt(grid_size / (j - 0.5))).unsqueeze(1) / (3 * quartile) + 1 / x[-1]  # (grid, images)
    k_grid = torch.log1p(-b.unsqueeze(-1) * x.T.unsqueeze(0)).mean(-1)  # (grid, images)
    profile = m * (torch.log(-b / k_grid) - k_grid - 1)
    b_mean = (b * torch.softmax(profile, 0)).sum(0)
    k_hat = torch.log1p(-b_mean * x).mean(0)
    k_hat = (m * k_hat + prior_weight * 0.5) / (m + prior_weight)
    return torch.where(x[-1] > 0, k_hat, torch.full_like(k_hat, float("nan")))


@torch.no_grad()
def calibration(vae: analytic.LatentVariableModel, x: torch.Tensor, samples: int, seeds: int) -> dict:
    """The estimate's real spread over `seeds` seeds (K = `samples`, images x, a 2-D latent space) divided by
    the standard error each seed reports, for the jackknife and for the delta method (Var[w / mean w] / K per
    image): directly (the mean estimate's standard deviation over the reported errors' root mean square),
    and pooled over the independent images, sqrt(sum_i Var_seeds(log p^_i) / sum_i mean_seeds(v_i)), the
    same expectation with far less noise. 1 is calibrated; above 1 the reported error is too small.
    Also the mean estimate over seeds and images, and the seeds' estimates (`estimates`, seeds x images)."""
    estimates, jackknife, delta = [], [], []
    for seed in range(seeds):
        eps = torch.randn(
            samples, x.shape[0], vae.z_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        log_w = analytic.log_importance_weights(vae, x, eps)
        log_mean = analytic.log_mean_exp(log_w)
        estimates.append(log_mean)
        jackknife.append(jackknife_variance(log_w))
        delta.append((log_w - log_mean).exp().var(0, correction=0) / samples)
    estimates, jackknife, delta = torch.stack(estimates), torch.stack(jackknife), torch.stack(delta)
    n = x.shape[0]
    spread = estimates.mean(1).std().item()
    pooled = estimates.var(0).sum()
    return dict(
        mean=estimates.mean().item(),
        estimates=estimates,
        jackknife=spread / (jackknife.sum(1).sqrt() / n).pow(2).mean().sqrt().item(),
        delta=spread / (delta.sum(1).sqrt() / n).pow(2).mean().sqrt().item(),
        jackknife_pooled=(pooled / jackknife.mean(0).sum()).sqrt().item(),
        delta_pooled=(pooled / delta.mean(0).sum()).sqrt().item(),
    )
