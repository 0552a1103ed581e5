"""log p(x) of any Pyro program by importance sampling from its guide: the generic path, read from traces.

    log w_k(x_i) = sum_{model's sites s} log p(s | its parents) - sum_{guide's sites s} log q(s | ...),   z_k ~ q
    log p^(x_i)  = log (1/K) sum_k w_k(x_i)

The guide runs once for all K samples, inside a plate of K outside the program's own plates (vectorized, as
Pyro's `vectorized_importance_weights` does), and the model is replayed on its draws. Unlike Pyro's, the
weights stay per image: each site's unscaled log-density (the program's own 1/batch scale and a KL weight are
not log p) is kept along the program's plate over the images, at dim -1, so that every image gets its own
estimate, standard error, ESS and Pareto k-hat (`estimates.LogLikelihood`). A site outside that plate (a
global latent) has no per-image density, and is refused in one line naming it. On the built-in VAE this is
the hand-derived `analytic.log_importance_weights` (tests/test_program_likelihood.py, to 1e-10 in float64).

A model's site marked for enumeration (and not drawn by the guide) is summed out exactly: the model runs under
`poutine.enum`, each such site's values along a dimension of its own left of the samples' plate, and log p(x, z)
is the logsumexp over those dimensions of the sum of the sites' log-densities. A guide's discrete site is
sampled, as any other (importance sampling from q(y|x) q(z|x, y)).
"""

from __future__ import annotations

from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import ConfigError
from pyro_vae.evaluation.estimates import ElboTerms, LogLikelihood, per_image_estimates

Program = Callable[..., object]  # a Pyro model or guide: a function (or module) of the batch's tensors


def trace_log_weights(model_trace: poutine.Trace, guide_trace: poutine.Trace, images: int) -> torch.Tensor:
    """log w per (sample, image), shape (K, images): the model's sites' log-densities (its enumerated sites
    summed out) minus the guide's, each unscaled, masked where the program masks it, summed over event dims
    (Pyro's log_prob) and kept per image."""
    return _site_sum(model_trace, images) - _site_sum(guide_trace, images)


def trace_elbo_terms(
    model_trace: poutine.Trace, guide_trace: poutine.Trace, images: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ELBO's two terms per (sample, image), -ELBO = distortion + rate:

        distortion = -sum_{observed sites} log p(x | ...),    rate = sum_{guide's sites} log q - sum_{latent sites} log p

    (their means over the samples estimate -E_q[log p(x|z)] and KL(q || p), every term from the same draws): a
    latent site is one the guide draws or the model enumerates, an observed site any other of the model's.
    With enumerated sites y summed out, distortion = -[log p(x, z) - log p(z)] and rate = log q - log p(z),
    each of log p(x, z) and log p(z) = log sum_y p(y, z) summed over y exactly."""
    drawn = {name for name, site in guide_trace.nodes.items() if site["type"] == "sample"}
    log_prior = _site_sum(model_trace, images, lambda site: site["name"] in drawn or _enumerated(site))
    return log_prior - _site_sum(model_trace, images), _site_sum(guide_trace, images) - log_prior


@torch.no_grad()
def program_elbo_terms(
    model: Program,
    guide: Program,
    batch: tuple[torch.Tensor, ...],
    num_samples: int = 1,
    seed: int = 0,
    max_plate_nesting: int = 1,
) -> ElboTerms:
    """-ELBO per image averaged over the images of `batch`, as its two terms (`trace_elbo_terms`), each
    estimated by `num_samples` draws of the guide (vectorized), from a generator seeded with `seed` (the global
    random state is left as it was): the test loss of any program, as `likelihood.elbo_terms` is the VAE's."""
    with torch.random.fork_rng(devices=[batch[0].device] if batch[0].is_cuda else []):
        torch.manual_seed(seed)
        distortion, rate = trace_elbo_terms(
            *traces(model, guide, batch, num_samples, max_plate_nesting), batch[0].shape[0]
        )
    return ElboTerms(distortion.double().mean().item(), rate.double().mean().item())


def program_log_weights(
    model: Program, guide: Program, batch: tuple[torch.Tensor, ...], num_samples: int, max_plate_nesting: int = 1
) -> torch.Tensor:
    """(num_samples, images) log-weights of the images of `batch` (the program's arguments, images first),
    the guide's K draws vectorized in a plate outside the program's `max_plate_nesting` plates."""
    return trace_log_weights(*traces(model, guide, batch, num_samples, max_plate_nesting), batch[0].shape[0])


def traces(
    model: Program, guide: Program, batch: tuple[torch.Tensor, ...], num_samples: int, max_plate_nesting: int = 1
) -> tuple[poutine.Trace, poutine.Trace]:
    """(model trace, guide trace) of `num_samples` draws of the guide, vectorized in a plate outside the
    program's `max_plate_nesting` plates, the model replayed on them."""
    with pyro.plate("importance_samples", num_samples, dim=-(max_plate_nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*batch)
        replayed = poutine.replay(model, trace=guide_trace)
        enumerated = poutine.enum(replayed, first_available_dim=-(max_plate_nesting + 2))
        model_trace = poutine.trace(enumerated).get_trace(*batch)
    return model_trace, guide_trace


@torch.no_grad()
def program_log_likelihood(
    model: Program,
    guide: Program,
    batch: tuple[torch.Tensor, ...],
    num_samples: int = 5000,
    seed: int = 0,
    max_rows: int = 65_536,
    max_plate_nesting: int = 1,
    progress: Callable[[int], None] = lambda images: None,
) -> LogLikelihood:
    """log p(x) ~ log (1/K) sum_k w_k per image of `batch` (a tuple of tensors whose first dim is the images:
    the images, and what else the program takes of each, labels or a condition), in chunks of at most
    `max_rows` (image, sample) pairs, with the jackknife standard error, ESS and k-hat of `likelihood`'s path.
    The draws come from a generator seeded with `seed`; the global random state is left as it was."""
    images = batch[0].shape[0]
    if not num_samples >= 1 or any(t.shape[0] != images for t in batch):
        raise ConfigError(f"need K >= 1 and every tensor of the batch with {images} rows (one per image)")
    per_chunk = max(1, min(images, max_rows // num_samples))
    samples = max(1, min(num_samples, max_rows // per_chunk))
    results = []
    with torch.random.fork_rng(devices=[batch[0].device] if batch[0].is_cuda else []):
        torch.manual_seed(seed)
        for chunk in zip(*(t.split(per_chunk) for t in batch)):
            log_w = torch.cat(
                [
                    program_log_weights(model, guide, chunk, min(samples, num_samples - start), max_plate_nesting)
                    for start in range(0, num_samples, samples)
                ]
            ).double()
            results.append(per_image_estimates(log_w))
            progress(chunk[0].shape[0])
    return LogLikelihood.of_images(num_samples, *(torch.cat(parts) for parts in zip(*results)))


def _site_sum(trace: poutine.Trace, images: int, chosen: Callable[[dict], bool] = lambda site: True) -> torch.Tensor:
    """The sum over a trace's `chosen` sample sites (all by default) of their unscaled, masked log-densities,
    per (sample, image); enumerated sites' dimensions (left of the samples') summed out by logsumexp."""
    trace.compute_log_prob()
    enumerated = sum(_enumerated(site) for site in trace.nodes.values())
    total = 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not chosen(site):
            continue
        log_p = site["unscaled_log_prob"]
        if site["mask"] is not None:
            log_p = torch.where(torch.as_tensor(site["mask"], device=log_p.device), log_p, 0.0)
        if log_p.dim() < 1 or log_p.shape[-1] != images or log_p.dim() > 2 + enumerated:
            raise ConfigError(
                f"site {name!r} has a log-density of shape {tuple(log_p.shape)}, not one per image: log p(x) per "
                f"image needs every site inside the plate over the {images} images (dim -1), with its event dims "
                "declared (.to_event)"
            )
        total = total + log_p
    while isinstance(total, torch.Tensor) and total.dim() > 2:  # the enumerated sites' values, summed out
        total = total.logsumexp(0)
    return total


def _enumerated(site: dict) -> bool:
    """Whether `poutine.enum` gave the site its values along a dimension of its own."""
    return site.get("infer", {}).get("_enumerate_dim") is not None
