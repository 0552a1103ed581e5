"""What an evaluation gives: the negative ELBO of a split as its two terms, and an importance-sampled log p(x)
with what says how far it can be trusted; for the VAE's hand-derived path (`likelihood`) and any program's
(`program_likelihood`) alike."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyro_vae.core import analytic
from pyro_vae.evaluation import importance


@dataclass(frozen=True)
class ElboTerms:
    """The negative ELBO of a split, per image in nats, as its two terms."""

    reconstruction: float  # -E_q[log p(x|z)], the distortion
    kl: float  # KL(q(z|x) || p(z)), the rate

    @property
    def negative_elbo(self) -> float:
        return self.reconstruction + self.kl


@dataclass(frozen=True)
class LogLikelihood:
    """An importance-sampled estimate of the mean test log p(x), in nats per image, with what says how far
    it can be trusted (`importance`).

    `value` is the mean over images of log p^(x_i); `standard_error` its Monte Carlo standard error, from
    the jackknife variance of each log p^(x_i) over its K samples (the sampling noise of the estimate for
    these images: calibrated on a trained 2-D VAE, where the delta method's is 2 to 2.7 times too small;
    benchmarks/log_px_calibration.py); `spread` the standard deviation of log p^(x_i) over images (the test set's own
    variability, which does not shrink with K); `per_image` every log p^(x_i) and `per_image_variance` its
    jackknife variance; `effective_sample_size`
    and `pareto_k` per image the ESS and the Pareto k-hat of its weights (above 0.7: unreliable).
    """

    value: float
    standard_error: float
    spread: float
    num_samples: int
    per_image: torch.Tensor
    per_image_variance: torch.Tensor
    effective_sample_size: torch.Tensor
    pareto_k: torch.Tensor

    @classmethod
    def of_images(cls, num_samples: int, per_image: torch.Tensor, variance: torch.Tensor, ess: torch.Tensor,
                  k_hat: torch.Tensor) -> LogLikelihood:  # fmt: skip
        """The estimate from each image's log p^(x_i), its jackknife variance, ESS and k-hat
        (`per_image_estimates`): the mean, its standard error sqrt(sum of the variances) / n, the spread."""
        n = per_image.shape[0]
        return cls(
            value=per_image.mean().item(),
            standard_error=variance.sum().sqrt().item() / n,
            spread=per_image.std().item() if n > 1 else 0.0,
            num_samples=num_samples,
            per_image=per_image.cpu(),
            per_image_variance=variance.cpu(),
            effective_sample_size=ess.cpu(),
            pareto_k=k_hat.cpu(),
        )

    @property
    def max_pareto_k(self) -> float:
        """The largest k-hat over the images (NaN where none could be fitted: K < 25)."""
        finite = self.pareto_k[~self.pareto_k.isnan()]
        return finite.max().item() if finite.numel() else float("nan")

    @property
    def unreliable_images(self) -> int:
        """Images whose k-hat exceeds 0.7: their weights' variance may be infinite."""
        return int((self.pareto_k > importance.UNRELIABLE_K).sum())

    def diagnostics(self) -> dict:
        """The summary a person reads: k-hat's maximum and how many images pass 0.7, the ESS's range."""
        ess = self.effective_sample_size
        return dict(
            pareto_k_max=self.max_pareto_k,
            pareto_k_above_0_7=self.unreliable_images,
            effective_sample_size_min=ess.min().item(),
            effective_sample_size_median=ess.median().item(),
        )


def per_image_estimates(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From (K, images) log-weights: each image's log p^(x_i) = log (1/K) sum_k w_k, its jackknife variance,
    effective sample size and Pareto k-hat (`importance`)."""
    return (
        analytic.log_mean_exp(log_w),
        importance.jackknife_variance(log_w),
        importance.effective_sample_size(log_w),
        importance.pareto_k(log_w),
    )
