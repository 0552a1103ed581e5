"""What `scripts/evaluate.py` prints and writes of its result: the lines a person reads (the estimates, the
importance weights' diagnostics with a warning when unreliable, and each extra estimate asked for), and the
per-image CSV."""

from __future__ import annotations

import math
import sys

from pyro_vae.evaluation import likelihood as evaluate


def per_image_csv(estimate: evaluate.LogLikelihood) -> str:
    """One row per test image: its log p^(x), jackknife standard error, effective sample size, Pareto k-hat."""
    rows = zip(
        estimate.per_image.tolist(),
        estimate.per_image_variance.sqrt().tolist(),
        estimate.effective_sample_size.tolist(),
        estimate.pareto_k.tolist(),
    )
    return "image,log_likelihood,standard_error,effective_sample_size,pareto_k\n" + "".join(
        f"{i},{lp:.6f},{se:.6g},{ess:.6g},{k:.4f}\n" for i, (lp, se, ess, k) in enumerate(rows)
    )


def print_result(result: dict) -> None:
    """What a person reads: the estimates, the weights' diagnostics (a warning on stderr when unreliable), and
    each extra estimate asked for."""
    print(
        f"{result['run']} (epoch {result['epoch']}, {result['images']} test images): negative ELBO "
        f"{result['test_negative_elbo']:.3f}; log p(x) {result['test_log_likelihood']:.3f} "
        f"± {result['standard_error']:.3f} (K = {result['samples']}, {result['seconds']:.1f} s)"
    )
    print(
        f"importance weights: effective sample size {result['effective_sample_size_min']:.1f} to "
        f"{result['effective_sample_size_median']:.1f} (minimum, median over images) of K = {result['samples']}; "
        + khat_text(result["pareto_k_max"], result["samples"])
    )
    if result["pareto_k_above_0_7"]:
        print(
            f"warning: Pareto k-hat above 0.7 for {result['pareto_k_above_0_7']} of {result['images']} images: "
            "their weights' variance may be infinite, so their log p(x) and its ± cannot be trusted; use more "
            "samples or a guide closer to the posterior",
            file=sys.stderr,
        )
    if "prior_sampling_log_likelihood" in result:
        print(f"naive estimate from prior samples, same K: {result['prior_sampling_log_likelihood']:.3f}")
    if "ais_log_likelihood" in result:
        print(annealed_line(result))
    if "bdmc_lower" in result:
        print(sandwich_line(result))
    if "amortization_gap" in result:
        print(
            f"ELBO with the encoder's q {result['amortized_elbo']:.3f}; with q fitted per image "
            f"({result['local_fit_steps']} steps) {result['local_elbo']:.3f}; amortization gap {result['amortization_gap']:.3f}"
        )


def khat_text(k_max: float, samples: int) -> str:
    """The largest Pareto k-hat, or why there is none: its tail fit needs K >= 25 (and a tail that is not flat)."""
    if math.isnan(k_max):
        why = f"K = {samples} is too few for its tail fit (25 or more)" if samples < 25 else "every tail is flat"
        return f"Pareto k-hat not estimated ({why})"
    return f"Pareto k-hat at most {k_max:.2f}"


def annealed_line(result: dict) -> str:
    """AIS's estimate beside importance sampling's, in one line."""
    return (
        f"AIS (T = {result['ais_steps']}, {result['ais_chains']} chains, {result['ais_leapfrog']} leapfrog steps, "
        f"HMC acceptance {result['ais_acceptance']:.2f}): log p(x) {result['ais_log_likelihood']:.3f} "
        f"± {result['ais_standard_error']:.3f}, {result['ais_log_likelihood'] - result['test_log_likelihood']:+.3f} "
        f"nats against importance sampling ({result['ais_seconds']:.1f} s)"
    )


def sandwich_line(result: dict) -> str:
    """BDMC's two bounds and their gap, in one line."""
    return (
        f"BDMC on {result['bdmc_images']} images simulated from the model (T = {result['ais_steps']}): log p(x) "
        f"between {result['bdmc_lower']:.3f} ± {result['bdmc_lower_standard_error']:.3f} (forward AIS) and "
        f"{result['bdmc_upper']:.3f} ± {result['bdmc_upper_standard_error']:.3f} (reverse AIS), a gap of "
        f"{result['bdmc_gap']:.3f} nats ({result['bdmc_seconds']:.1f} s)"
    )
