"""Evaluation of a trained VAE: the negative ELBO per image over a whole split, and the
importance-sampled log-likelihood log p(x) with its standard error; for the built-in VAE by the hand-derived
forms of `analytic`, for a user's own program (`core.program.Program`) from its traces (`program_likelihood`)."""

from __future__ import annotations

import math
from typing import Callable

import torch

from pyro_vae.core import analytic
from pyro_vae.core.model import VAE
from pyro_vae.core.program import Program
from pyro_vae.distributed import SINGLE, World
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.evaluation.estimates import ElboTerms, LogLikelihood, per_image_estimates
from pyro_vae.evaluation.program_likelihood import program_elbo_terms, program_log_likelihood


@torch.no_grad()
def elbo_terms(
    vae: VAE | Program,
    x: torch.Tensor,
    num_samples: int = 1,
    seed: int = 0,
    chunk_size: int = 2000,
    rows: torch.Tensor | None = None,
    world: World = SINGLE,
    progress: Callable[[int], None] = lambda images: None,
    labels: torch.Tensor | None = None,
) -> ElboTerms:
    """-ELBO = -E_q[log p(x|z)] + KL(q || p(z)) per image averaged over the rows of x, in nats, as its two
    terms (`analytic.elbo_terms`): the KL exact where the guide has a closed form (else estimated, as
    E_q[log q(z|x) - log p(z)]), the expectation estimated by `num_samples` reparameterized samples.

    The noise comes from its own generator seeded with `seed`, so the figure is reproducible and
    drawing it leaves the global random state (and so training) untouched. For the local guide, `rows`
    gives the rows of x's data points in its table. With several ranks (`world`), each computes its share
    of the chunks (drawing the others' noise too, to skip past it) and the sums meet: the value is the
    one a single process computes. `progress(n)` hears of each chunk's n images. A program's terms come from
    its traces (`program_likelihood.program_elbo_terms`, every rank computing them whole), with the images'
    `labels` for a program of images and labels.
    """
    if isinstance(vae, Program):
        terms = program_elbo_terms(vae.run_model, vae.run_guide, vae.inputs(x, labels), num_samples, seed)
        progress(x.shape[0])
        return terms
    check_support(vae, x)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=x.device)
    for number, (chunk, chunk_rows) in enumerate(zip(x.split(chunk_size), _split(rows, chunk_size, x.shape[0]))):
        eps = torch.randn((num_samples, chunk.shape[0], vae.z_dim), generator=generator, device=x.device, dtype=x.dtype)
        if world.owns(number):
            log_likelihood, kl = analytic.elbo_terms(_at(vae, chunk_rows), chunk, eps)
            sums -= torch.stack([log_likelihood.double().sum(), -kl.double().sum()])
        progress(chunk.shape[0])
    reconstruction, kl = (world.sum(sums) / x.shape[0]).tolist()
    return ElboTerms(reconstruction, kl)


def negative_elbo(
    vae: VAE | Program,
    x: torch.Tensor,
    num_samples: int = 1,
    seed: int = 0,
    chunk_size: int = 2000,
    rows: torch.Tensor | None = None,
    world: World = SINGLE,
    labels: torch.Tensor | None = None,
) -> float:
    """-ELBO per image averaged over the rows of x, in nats: the sum of `elbo_terms`."""
    return elbo_terms(vae, x, num_samples, seed, chunk_size, rows, world, labels=labels).negative_elbo


@torch.no_grad()
def log_likelihood(
    vae: analytic.LatentVariableModel | Program,
    x: torch.Tensor,
    num_samples: int = 5000,
    seed: int = 0,
    max_rows: int = 65_536,
    proposal: str = "guide",
    rows: torch.Tensor | None = None,
    world: World = SINGLE,
    progress: Callable[[int], None] | None = None,
    labels: torch.Tensor | None = None,
) -> LogLikelihood:
    """log p(x) ~ log (1/K) sum_k w_k, per image, with K = `num_samples`:

    - proposal "guide" (importance sampling): z_k ~ q(z|x), w_k = p(x|z_k) p(z_k) / q(z_k|x); unbiased in
      p(x), and as K grows its log tends to log p(x) from below (it is the IWAE bound L_K);
    - proposal "prior" (the naive estimate, a counterexample): z_k ~ p(z), w_k = p(x|z_k); unbiased too, but
      almost every prior sample explains x badly, so at practical K it falls far below log p(x).

    Images and samples are processed in chunks of at most `max_rows` (image, sample) pairs, so the memory
    held at once is about max_rows * (x_dim + hidden + z_dim) floats whatever K; the log-weights are kept
    per image and reduced by logsumexp in float64, with each image's jackknife variance, effective sample
    size and Pareto k-hat (`importance`). For the local guide, `rows` gives the rows of x's data
    points in its table. With several ranks (`world`), each computes its share of the chunks of images
    (drawing the others' noise too, to skip past it) and the per-image results meet: the estimate is the
    one a single process computes, on every rank. `progress(n)` is called as each chunk of n images is done.
    A program's weights come from its traces (`program_likelihood.program_log_likelihood`, every rank
    computing them whole), with the images' `labels` for a program of images and labels.
    """
    _check_request(vae, num_samples, proposal)
    if isinstance(vae, Program):
        batch, progress = vae.inputs(x, labels), progress or (lambda images: None)
        return program_log_likelihood(
            vae.run_model, vae.run_guide, batch, num_samples, seed, max_rows, progress=progress
        )
    check_support(vae, x)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    images = max(1, min(x.shape[0], max_rows // num_samples))
    samples = max(1, min(num_samples, max_rows // images))
    per_image = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    variance, ess, k_hat = torch.zeros_like(per_image), torch.zeros_like(per_image), torch.zeros_like(per_image)
    for number, (chunk, chunk_rows) in enumerate(zip(x.split(images), _split(rows, images, x.shape[0]))):
        log_w = _log_weights(vae, chunk, chunk_rows, num_samples, samples, generator, proposal, world.owns(number))
        if progress is not None:
            progress(chunk.shape[0])
        if log_w is None:
            continue
        mine = slice(number * images, number * images + chunk.shape[0])
        per_image[mine], variance[mine], ess[mine], k_hat[mine] = per_image_estimates(log_w)
    return LogLikelihood.of_images(num_samples, *(world.sum(t) for t in (per_image, variance, ess, k_hat)))


def check_finite_model(
    vae: VAE | Program,
    x: torch.Tensor,
    rows: torch.Tensor | None = None,
    images: int = 8,
    consequence: str = "no estimate can be made from them",
    labels: torch.Tensor | None = None,
) -> None:
    """Refuse, in one line, a model whose negative ELBO on the first `images` of x (test images, with their
    `labels` for a program of images and labels) is not finite: damaged or absurd weights, which would
    otherwise print NaN as an estimate, or train from NaN. Its noise has a generator of its own: the global
    random state is untouched."""
    rows, labels = (None if t is None else t[:images] for t in (rows, labels))
    value = negative_elbo(vae, x[:images], rows=rows, labels=labels)
    if not math.isfinite(value):
        raise DataError(
            f"this model's negative ELBO on the first {min(images, x.shape[0])} test images is {value}: its "
            f"weights are damaged or out of any sensible range, so {consequence}"
        )


def _check_request(vae: analytic.LatentVariableModel, num_samples: int, proposal: str) -> None:
    if num_samples < 1:
        raise ConfigError(f"the number of importance samples must be at least 1, got {num_samples}")
    if proposal not in ("guide", "prior"):
        raise ConfigError(f"unknown proposal {proposal!r}; choose guide or prior")
    if proposal == "prior" and isinstance(vae, Program):
        raise ConfigError("the proposal prior is the built-in VAE's; a program's log p(x) samples from its guide")
    if proposal == "guide" and getattr(vae, "is_point_mass", False):
        raise ConfigError(
            "this VAE's guide is a point mass (@guide delta), which has no density to "
            "importance-sample log p(x) with; use the proposal prior (a naive estimate) or a VAE"
        )


def _log_weights(
    vae: analytic.LatentVariableModel,
    x: torch.Tensor,
    rows: torch.Tensor | None,
    num_samples: int,
    samples: int,
    generator: torch.Generator,
    proposal: str,
    mine: bool,
) -> torch.Tensor | None:
    """(num_samples, batch) log-weights of the images x in float64, `samples` at a time; None where the
    chunk is another rank's (its noise is drawn all the same, so that the generator stays in step)."""
    log_w = []
    for start in range(0, num_samples, samples):
        k = min(samples, num_samples - start)
        eps = torch.randn((k, x.shape[0], vae.z_dim), generator=generator, device=x.device, dtype=x.dtype)
        if not mine:
            continue
        if proposal == "guide":
            log_w.append(analytic.log_importance_weights(_at(vae, rows), x, eps).double())
        else:
            log_w.append(vae.log_likelihood(x, vae.prior_from_noise(eps)).double())
    return torch.cat(log_w) if log_w else None


def check_support(vae: analytic.LatentVariableModel, x: torch.Tensor) -> None:
    """Grey pixels have no probability under a Bernoulli likelihood: refused here as on the command line
    (the estimates would be numbers without meaning)."""
    config = getattr(vae, "config", None)  # a program's likelihood is its own: its checks are Pyro's
    bernoulli = config is not None and config.likelihood == "bernoulli" and not config.is_program
    if bernoulli and not bool(((x == 0) | (x == 1)).all()):
        raise DataError(
            "the Bernoulli likelihood needs pixels that are 0 or 1, but these images have grey pixels; "
            "binarize them (pyro_vae.data.fixed_binarization) or use a model with a likelihood for "
            "grey pixels (continuous-bernoulli or gaussian)"
        )


def _split(rows: torch.Tensor | None, size: int, images: int) -> list[torch.Tensor | None]:
    """rows in chunks of `size`, aligned with x.split(size); all None without rows."""
    if rows is None:
        return [None] * math.ceil(images / size)
    if rows.shape != (images,):
        raise ConfigError(f"rows must give one row per image: {images} images, rows of shape {tuple(rows.shape)}")
    return list(rows.split(size))


def _at(vae: analytic.LatentVariableModel, rows: torch.Tensor | None) -> analytic.LatentVariableModel:
    """The model with q fixed to the data points `rows` (local guide), or the model itself."""
    return vae if rows is None else vae.at(rows)
