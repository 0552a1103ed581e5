"""A user's Pyro program (a model and its guide) checked on one batch before anything trains: each problem
refused in one line naming the site, not a shape error or a NaN from deep inside Pyro on some later step.

    model(*batch), guide(*batch)   the batch: the images first (and labels or a condition the program takes)

What is checked, from one trace of each (the guide's draws replayed in the model):
- a plate over the images at dim -1, around every site (a site outside it has no density per image);
- the guide samples exactly the model's latent sites (none missing, none the model does not have);
- each observed site's value has the shape of its distribution (batch and event dims);
- a site marked for enumeration has a finite support (a Categorical or Bernoulli, not a Poisson), and is
  enumerated only by the estimator `enum` (a model's site marked so needs no guide site: it is summed out);
- the estimator can train the program (not the TorchScript-compiled jit-*, which read Pyro's param store) and
  each of the guide's sites: stl, dreg and the importance-weighted bounds need
  reparameterized draws (a discrete or otherwise non-reparameterizable site is refused, named);
- every site's log-density is finite on the batch.
"""

from __future__ import annotations

from typing import Callable

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import ConfigError, first_line

Program = Callable[..., object]


PATHWISE = ("stl", "dreg", "iwae", "miwae", "piwae", "ciwae")  # estimators that differentiate through the draws


def check_program(
    model: Program, guide: Program, batch: tuple[torch.Tensor, ...], estimator: str | None = None
) -> None:
    """Every check above on `batch` (first its plates and sites, then the densities; the estimator's where one
    is named); ConfigError at the first."""
    if estimator is not None and estimator.startswith("jit-"):
        raise ConfigError(
            f"@estimator {estimator} reads the parameters from Pyro's global param store by name, and a program's stay "
            f"out of it (they are the run's own); use @estimator {estimator[4:]}, and @compile for a compiled step"
        )
    images = batch[0].shape[0]
    guide_trace = _trace(guide, batch, "guide")
    model_trace = _trace(poutine.replay(model, trace=guide_trace), batch, "model")
    drawn = _sites(guide_trace, observed=False)
    latent = {
        name: site
        for name, site in _sites(model_trace, observed=False).items()
        if not _enumerated(site) or name in drawn
    }
    if missing := [name for name in latent if name not in drawn]:
        raise ConfigError(f"the guide does not sample the model's latent site(s) {', '.join(map(repr, missing))}")
    if extra := [name for name in drawn if name not in latent]:
        raise ConfigError(f"the guide samples site(s) {', '.join(map(repr, extra))} that the model does not have")
    for which, trace in (("guide", guide_trace), ("model", model_trace)):  # the guide's marks first: replay copies them
        for name, site in _sites(trace).items():
            _check_site(which, name, site, images, estimator)
    for name, site in drawn.items():
        _check_estimator_site(name, site, estimator)
    for which, trace in (("model", model_trace), ("guide", guide_trace)):
        _check_densities(which, trace)


def _trace(program: Program, batch: tuple[torch.Tensor, ...], which: str) -> poutine.Trace:
    try:
        return poutine.trace(program).get_trace(*batch)
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError, NotImplementedError) as error:
        raise ConfigError(
            f"the {which} failed on the first batch: {type(error).__name__}: {first_line(error)}"
        ) from None


def _sites(trace: poutine.Trace, observed: bool | None = None) -> dict[str, dict]:
    """The trace's sample sites (not plates' subsample sites), observed ones, latent ones, or all."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and (observed is None or bool(site["is_observed"]) == observed)
    }


def _enumerated(site: dict) -> bool:
    return bool(site["infer"].get("enumerate"))


def _check_site(which: str, name: str, site: dict, images: int, estimator: str) -> None:
    """The site inside a plate of `images` at dim -1; an observed value of its distribution's shape; a site
    marked for enumeration with a finite support, under the estimator `enum`."""
    frames = [frame for frame in site["cond_indep_stack"] if frame.dim == -1 and frame.size == images]
    if not frames:
        raise ConfigError(
            f"the {which}'s site {name!r} lies outside a plate over the {images} images at dim -1 "
            "(pyro.plate(name, batch_size)): each image needs its own density"
        )
    fn, value = site["fn"], site["value"]
    if site["is_observed"] and tuple(value.shape) != tuple(fn.batch_shape) + tuple(fn.event_shape):
        raise ConfigError(
            f"the {which}'s observed site {name!r} has a value of shape {tuple(value.shape)}, but its distribution "
            f"gives batch shape {tuple(fn.batch_shape)} and event shape {tuple(fn.event_shape)}"
        )
    if _enumerated(site) and not getattr(fn, "has_enumerate_support", False):
        raise ConfigError(
            f"the {which}'s site {name!r} is marked for enumeration, but its distribution "
            f"({type(fn).__name__}) has no finite support to sum over; sample it instead"
        )
    if _enumerated(site) and estimator not in ("enum", None):
        raise ConfigError(
            f"the {which}'s site {name!r} is marked for enumeration, which only @estimator enum (TraceEnum_ELBO) "
            f"does; @estimator {estimator} would sample it: choose enum, or remove the mark"
        )


def _check_estimator_site(name: str, site: dict, estimator: str) -> None:
    """A guide's site that the estimator can train: stl, dreg and the importance-weighted bounds differentiate
    log w through the draw, which needs a reparameterized one (rsample)."""
    if estimator in PATHWISE and not site["fn"].has_rsample:
        raise ConfigError(
            f"@estimator {estimator} differentiates through the guide's draws, but its site {name!r} "
            f"({type(site['fn']).__name__}) cannot be reparameterized; use trace (score function for that site) "
            "or mark it for enumeration under enum"
        )


def _check_densities(which: str, trace: poutine.Trace) -> None:
    """Every site's log-density finite on the batch."""
    try:
        trace.compute_log_prob()
    except ValueError as error:  # Pyro's validation: a value outside the support, a bad parameter
        raise ConfigError(f"the {which}'s densities are refused on the first batch: {first_line(error)}") from None
    for name, site in _sites(trace).items():
        if not torch.isfinite(site["log_prob"]).all():
            raise ConfigError(f"the {which}'s site {name!r} has a log-density that is not finite on the first batch")
