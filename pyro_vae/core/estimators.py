"""ELBO estimators built by name, and the per-image loss they give for a VAE.

| name            | Pyro estimator              | KL(q || p) term                    |
|-----------------|-----------------------------|------------------------------------|
| `trace`         | `Trace_ELBO` (`device_elbo`) | Monte Carlo: log q(z|x) - log p(z) |
| `meanfield`     | `TraceMeanField_ELBO` (`device_elbo`) | closed form where q and p allow it |
| `jit-trace`     | `JitTrace_ELBO` (`device_elbo`) | as `trace`, compiled once          |
| `jit-meanfield` | `JitTraceMeanField_ELBO` (fixed here, see below) | as `meanfield`, compiled once |
| `iwae`          | `RenyiELBO(alpha=0)` (made differentiable here, see below) | inside log (1/K) sum_k w_k |
| `score`         | `TraceGraph_ELBO`, z not reparameterized | Monte Carlo, as `trace`               |
| `score-baseline`| as `score`, with a leave-one-out baseline | Monte Carlo, as `trace`              |
| `stl`           | `Trace_ELBO`, sticking the landing (`iwae_estimators.STL_ELBO`) | Monte Carlo, as `trace`, without the score term |
| `dreg`, `miwae`, `piwae`, `ciwae` | the importance-weighted family (`iwae_estimators`) | inside the bound |
| `enum`          | `TraceEnum_ELBO` (`device_elbo`): the sites marked for enumeration summed out exactly | Monte Carlo, as `trace`, for the sampled sites |

`device_elbo` holds Pyro's classes with the loss's value kept on the device (no `.item()` per site), so
that a step never waits for the device. `iwae` with K = `num_particles` trains the importance-weighted bound log (1/K) sum_k p(x, z_k) / q(z_k|x),
which is not an average of K ELBO estimates; with K = 1 it is `trace`.

`score` and `score-baseline` estimate the gradient of the same ELBO as `trace`, without the
reparameterization trick: z is drawn from q(z|x) with no path back to the encoder, so the encoder learns
only through the score function (REINFORCE), grad E_q[f(z)] = E_q[f(z) grad log q(z|x)].
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import pyro
import pyro.infer
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from pyro_vae.core import device_elbo
from pyro_vae.core.iwae_estimators import CIWAE_ELBO, IWAE_ELBO, MIWAE_ELBO, PIWAE_ELBO, STL_ELBO, DReG_ELBO
from pyro_vae.core.model import VAE
from pyro_vae.errors import ConfigError, first_line

LossFunction = Callable[..., torch.Tensor]  # loss(x, kl_weight, given=None) -> the negative ELBO per image


class JitTraceMeanField_ELBO(pyro.infer.JitTraceMeanField_ELBO):
    """Pyro 1.9's `JitTraceMeanField_ELBO`, compiled once instead of on every call.

    Upstream, `differentiable_loss` tests for a cached `_loss_and_surrogate_loss` attribute but stores
    the compiled function as `_differentiable_loss`, so every step builds and traces a new function.
    This subclass reuses the stored one; the first call still goes through Pyro's code. Its KL terms are
    `device_elbo.TraceMeanField_ELBO`'s: closed form only where the sites' order makes it exact.
    """

    _get_trace = device_elbo.TraceMeanField_ELBO._get_trace
    _differentiable_loss_particle = device_elbo.TraceMeanField_ELBO._differentiable_loss_particle

    def differentiable_loss(self, model, guide, *args, **kwargs):
        compiled = getattr(self, "_differentiable_loss", None)
        if compiled is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return compiled(*args, _pyro_model_id=id(model), _pyro_guide_id=id(guide), **kwargs)


class ScoreFunction_ELBO(pyro.infer.TraceGraph_ELBO):
    """The ELBO with its encoder gradient by the score function (REINFORCE), as Pyro forms it for a site
    that cannot be reparameterized: `TraceGraph_ELBO`, with the guide's z made non-reparameterized
    (`has_rsample_(False)`), so that z ~ q(z|x) carries no gradient and

        grad_phi ELBO = E_q[(log w - b) grad_phi log q(z|x)],   log w = log p(x, z) - log q(z|x),

    (the decoder's gradient stays pathwise: grad_theta log p(x|z)). The loss's value is the negative
    ELBO estimate; its gradient is that of Pyro's surrogate loss.

    With `baseline`, b for image i is the mean of the other images' log w in the same batch (and the
    same particle): independent of z_i, so the gradient stays unbiased, and it removes the common level
    of log w (hundreds of nats), which dominates the score function's variance. It is handed to Pyro
    as the site's `baseline_value`. (Pyro's decaying-average baseline keeps one running average per batch
    position in the global param store: a smaller last batch breaks it, and a checkpoint would not
    hold it.) A batch of one image has no other image, and so no baseline.
    """

    def __init__(self, baseline: bool = False, **options):
        super().__init__(**options)
        self.baseline = baseline

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        with NonReparameterized():  # outside the particles' plate, so it acts after that plate's broadcast
            elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return surrogate_loss + (-elbo - surrogate_loss).detach()

    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        # log_w of shape (batch,) or (particles, batch), as scaled by Pyro
        if self.baseline and (log_w := _log_weights(model_trace, guide_trace)).shape[-1] > 1:
            baseline = (log_w.sum(-1, keepdim=True) - log_w) / (log_w.shape[-1] - 1)
            for site in guide_trace.nodes.values():
                if site["type"] == "sample" and not site_is_subsample(site):
                    site["infer"] = {**site["infer"], "baseline": {"baseline_value": baseline}}
        return super()._loss_and_surrogate_loss_particle(model_trace, guide_trace)


class NonReparameterized(Messenger):
    """Samples every latent site without reparameterization: Pyro's per-instance `has_rsample_(False)` on
    the innermost base distribution, which `Independent` and `TransformedDistribution` defer to. (In the
    model, z is replayed from the guide, so only the guide's sampling is changed.)"""

    def _pyro_sample(self, msg) -> None:
        if not msg["is_observed"]:
            base = msg["fn"]
            while hasattr(base, "base_dist"):
                base = base.base_dist
            base.has_rsample_(False)


def _log_weights(model_trace, guide_trace) -> torch.Tensor:
    """log p(x, z) - log q(z|x) per image (and particle), detached, with Pyro's scales applied."""
    model_sites, guide_sites = (
        [site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample" and not site_is_subsample(site)]
        for trace in (model_trace, guide_trace)
    )
    return (sum(model_sites) - sum(guide_sites)).detach()


ESTIMATORS = {
    "trace": device_elbo.Trace_ELBO,
    "meanfield": device_elbo.TraceMeanField_ELBO,
    "jit-trace": device_elbo.JitTrace_ELBO,
    "jit-meanfield": JitTraceMeanField_ELBO,
    "iwae": IWAE_ELBO,
    "score": ScoreFunction_ELBO,
    "score-baseline": lambda **options: ScoreFunction_ELBO(baseline=True, **options),
    "stl": STL_ELBO,
    "dreg": DReG_ELBO,
    "miwae": MIWAE_ELBO,
    "piwae": PIWAE_ELBO,
    "ciwae": CIWAE_ELBO,
    "enum": device_elbo.TraceEnum_ELBO,
}
SCORE_FUNCTION = ("score", "score-baseline")  # estimators whose encoder gradient is the score function
IMPORTANCE_WEIGHTED = ("iwae", "dreg", "miwae", "piwae", "ciwae")  # bounds of the K log-weights: no KL weight
NEED_DENSITY = ("stl", "dreg", "miwae", "piwae", "ciwae")  # need log q at any z: no point mass, no sampled-only guide


def build_elbo(name: str, num_particles: int = 1, copies: int = 1, ciwae_beta: float = 0.5) -> pyro.infer.ELBO:
    """The estimator `name` with K = `num_particles` samples (vectorized), M = `copies` sets of them for
    `miwae` and `piwae`, and `ciwae`'s weight beta of the ELBO."""
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}")
    if num_particles < 1 or copies < 1:
        raise ConfigError(f"@num_particles and @iwae_copies must be at least 1, got {num_particles}, {copies}")
    options = dict(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)
    if name.startswith("jit-"):
        options["ignore_jit_warnings"] = True
    if name in ("miwae", "piwae"):
        options["copies"] = copies
    if name == "ciwae":
        options["beta"] = ciwae_beta
    return ESTIMATORS[name](**options)


_module_names = itertools.count()


class ELBOLoss(nn.Module):
    """loss(x, kl_weight, given=None) = the estimator's negative ELBO per image, differentiable in vae's
    parameters: a module holding the VAE (or a user's `Program`), as Pyro's `ELBOModule` is, so that a
    wrapper (DDP, a compiler) takes the loss whole. `given` is what the model reads of each image beside its
    pixels: for the local guide the rows of x's data points in its table, for a program of images and labels
    the labels (its model's and guide's third argument, after x and the KL weight).

    Pyro validates every distribution's arguments and every observed value on every call (the Bernoulli
    support check alone scans the whole batch); here only the first call runs with Pyro's validation as
    set globally, so a wrong shape or an out-of-support value stops the run at its first step, and later
    calls run without it (the data is also checked once when loaded). `validate_every_step` keeps it on.

    The compiled (JIT) estimators read parameters from Pyro's param store by name, so for them the module
    is registered there under a name of its own ("vae0", "vae1", ...): two compiled losses, used in turn,
    each read their own module's parameters, and none picks up the values of an earlier model.
    """

    def __init__(self, vae: VAE, elbo: pyro.infer.ELBO, validate_every_step: bool = False):
        super().__init__()
        self.vae = vae
        self.elbo = elbo
        self.validate_every_step = validate_every_step
        self.validated = False
        compiled = isinstance(elbo, (pyro.infer.JitTrace_ELBO, pyro.infer.JitTraceMeanField_ELBO))
        self._negative_elbo = _compiled_loss(vae, elbo) if compiled else self._traced_loss

    def forward(self, x: torch.Tensor, kl_weight: float, given: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.elbo, IWAE_ELBO):
            check_no_kl_weight(self.elbo, kl_weight)
        if self.validate_every_step or not self.validated:
            self.validated = True
            try:
                return self._negative_elbo(x, kl_weight, given)
            except ValueError as error:  # Pyro's checks: a bad value, and then the whole tensor printed
                if isinstance(error, ConfigError):
                    raise
                raise ConfigError(f"Pyro's checks refused the model's values: {first_line(error, 300)}") from None
        with pyro.validation_enabled(False):
            return self._negative_elbo(x, kl_weight, given)

    def _traced_loss(self, x: torch.Tensor, kl_weight: float, given: torch.Tensor | None) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x, kl_weight, given)


def check_no_kl_weight(elbo: pyro.infer.ELBO, kl_weight: float | torch.Tensor) -> None:
    """Refuse, in one line, a KL weight other than 1 for an importance-weighted bound (iwae, dreg, miwae, piwae,
    ciwae): log (1/K) sum_k p(x, z_k) / q(z_k|x) has no separate KL term to weight, and these estimators read
    the unscaled log-densities, so any other weight would be silently ignored. A traced (fake) tensor is
    checked where its value was given, before tracing."""
    if isinstance(kl_weight, FakeTensor) or torch.compiler.is_compiling():
        return
    value = float(kl_weight) if not isinstance(kl_weight, torch.Tensor) or kl_weight.numel() == 1 else math.nan
    if value != 1:
        raise ConfigError(
            f"{type(elbo).__name__} trains an importance-weighted bound, which has no separate KL term to weight; "
            f"its KL weight must be 1, got {kl_weight!r:.40}"
        )


def _compiled_loss(vae: VAE, elbo: pyro.infer.ELBO) -> LossFunction:
    name = f"vae{next(_module_names)}"

    def model(x: torch.Tensor, kl_weight: torch.Tensor, *given: torch.Tensor) -> None:
        pyro.module(name, vae)
        vae.model(x, kl_weight, *given)

    def guide(x: torch.Tensor, kl_weight: torch.Tensor, *given: torch.Tensor) -> None:
        pyro.module(name, vae)
        vae.guide(x, kl_weight, *given)

    def compiled_loss(x: torch.Tensor, kl_weight: float, given: torch.Tensor | None = None) -> torch.Tensor:
        # tensor arguments only (a new KL weight does not trigger a new compilation; None is no tensor)
        kl = torch.as_tensor(kl_weight, dtype=x.dtype, device=x.device)
        return elbo.differentiable_loss(model, guide, x, kl, *(() if given is None else (given,)))

    return compiled_loss
