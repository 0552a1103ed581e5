"""The importance-weighted family: IWAE, its doubly reparameterized gradient, and the bounds of Rainforth
et al. (2018) that give the encoder and the decoder different objectives. All read the log-weights

    log w_k = log p(x, z_k) - log q(z_k|x),   z_k = g(eps_k; x, phi),   k = 1..K (per image, unscaled)

from Pyro's traces of the model and guide, and write L_K = log_mean_exp_k(log w_k) with `analytic.log_mean_exp`.

| name    | value (per image)                                   | gradient                                     |
|---------|-----------------------------------------------------|----------------------------------------------|
| `iwae`  | L_K                                                 | of L_K (reparameterized)                     |
| `dreg`  | L_K                                                 | decoder: of L_K; encoder: doubly reparameterized, sum_k w~_k^2 dlog w_k/dz_k dz_k/dphi |
| `miwae` | (1/M) sum_m L_K^(m), M independent sets of K        | of that                                      |
| `ciwae` | beta ELBO_K + (1 - beta) L_K (ELBO_K: mean of log w) | of that                                      |
| `piwae` | MIWAE(M, K) as `miwae`                               | decoder: of L_(MK) over all M K samples; encoder: of MIWAE(M, K) |

w~_k = w_k / sum_j w_j, held constant. A KL weight (beta of the ELBO) has no place in these bounds and is refused.
"""

from __future__ import annotations

import pyro.infer
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from pyro_vae.core import analytic, device_elbo


class IWAE_ELBO(pyro.infer.RenyiELBO):
    """Pyro's `RenyiELBO(alpha=0)`, the IWAE bound, per image and differentiable:

        loss = -(1/B) sum_i [logsumexp_k log w_ik - log K],  log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i).

    Pyro 1.9's `RenyiELBO` has no `differentiable_loss` (its `loss_and_grads` differentiates only
    parameters in Pyro's param store), and it sums the *scaled* log-densities, so the model's 1/batch
    scale would temper the weights inside the logsumexp. This subclass reads Pyro's traces the same way
    but uses the unscaled log-densities; so a KL weight (beta) has no meaning here and is refused.
    """

    def __init__(self, num_particles: int, **options):
        super().__init__(alpha=0, num_particles=num_particles, **options)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return -self.bound(self.log_weights(model, guide, args, kwargs)[0]).mean()

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The bound per image from the (particles, batch) log-weights: here L_K."""
        return analytic.log_mean_exp(log_w)

    def log_weights(self, model, guide, args, kwargs) -> tuple[torch.Tensor, object, object]:
        """(log w of shape (particles, batch), the model's trace, the guide's trace)."""
        (model_trace, guide_trace), *more = list(self._get_traces(model, guide, args, kwargs))
        if more:  # not vectorized: one trace per particle
            traces = [(model_trace, guide_trace), *more]
            return torch.stack([_log_w(m, g) for m, g in traces]), model_trace, guide_trace
        log_w = _log_w(model_trace, guide_trace)
        return (log_w if self.vectorize_particles else log_w.unsqueeze(0)), model_trace, guide_trace


class MIWAE_ELBO(IWAE_ELBO):
    """M independent IWAE(K) bounds averaged: (1/M) sum_m log (1/K) sum_k w_mk, from M K samples."""

    def __init__(self, num_particles: int, copies: int = 1, **options):
        options.update(num_particles=num_particles * copies, vectorize_particles=num_particles * copies > 1)
        super().__init__(**options)
        self.copies = copies

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return analytic.log_mean_exp(log_w.reshape(self.copies, -1, *log_w.shape[1:]), dim=1).mean(0)


class CIWAE_ELBO(IWAE_ELBO):
    """beta ELBO_K + (1 - beta) IWAE_K from the same K samples: beta mean_k log w_k + (1 - beta) L_K."""

    def __init__(self, num_particles: int, beta: float = 0.5, **options):
        super().__init__(num_particles=num_particles, **options)
        self.beta = beta

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return self.beta * log_w.mean(0) + (1 - self.beta) * analytic.log_mean_exp(log_w)


class PIWAE_ELBO(MIWAE_ELBO):
    """The value and the encoder's gradient of MIWAE(M, K); the decoder's gradient of IWAE(M K), the
    tighter bound over all M K samples. The decoder's gradient of a bound is sum_j a_j grad_theta log p(x, z_j)
    at fixed z, with a_j the bound's derivative in log w_j (normalized weights); so the surrogate adds
    sum_j (w~_j - a_j) log p(x, z_j) with z_j detached (a second run of the model), value 0."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        log_w, _, guide_trace = self.log_weights(model, guide, args, kwargs)
        miwae, weights = self.bound(log_w), log_w.detach().softmax(0)
        shares = log_w.detach().reshape(self.copies, -1, *log_w.shape[1:]).softmax(1).reshape(log_w.shape) / self.copies
        log_p = self.log_joint_at_fixed_z(model, guide_trace, args, kwargs)
        decoder_shift = ((weights - shares) * log_p).sum(0)
        return -(miwae + decoder_shift - decoder_shift.detach()).mean()

    def log_joint_at_fixed_z(self, model, guide_trace, args, kwargs) -> torch.Tensor:
        """log p(x, z) (particles, batch) with the guide's z detached: a gradient for the model only."""
        log_p = sum(_unscaled(replay_at_fixed_z(self, model, guide_trace, args, kwargs)))
        return log_p if self.vectorize_particles else log_p.unsqueeze(0)


class DReG_ELBO(IWAE_ELBO):
    """IWAE's value and decoder gradient, with the doubly reparameterized encoder gradient of Tucker,
    Lawson, Gu and Maddison (2019):

        grad_phi L_K = E[sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi)]      (q's own parameters held fixed)

    which drops the score terms whose expectation is zero. The surrogate sum_k w~_k [log p(x, z_k) -
    log q(z'_k; phi) + log q(z_k.detach(); phi)] (z' = z, evaluated afresh, not from the sample's cache)
    has the decoder gradient sum_k w~_k grad_theta log p and, through z only, sum_k w~_k dlog w_k/dz_k; a
    hook on z_k multiplies what reaches it by w~_k once more.

    A guide of several latent sites (a two-layer VAE's q(z1|x) q(z2|z1)) sends z1's gradient through z2 as
    well, so hooks on both would weight it twice. There the surrogate is

        sum_k w~_k^2 [log w_k + log q(z_k.detach(); phi)] + sum_k (w~_k - w~_k^2) log p(x, z_k.detach())

    with the guide and the model replayed at the detached z: the first term's gradient in phi is w~^2 times
    the path through z, the two together give the decoder w~_k grad_theta log p."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        log_w, model_trace, guide_trace = self.log_weights(model, guide, args, kwargs)
        weights = log_w.detach().softmax(0)
        if len(_latent_sites(guide_trace)) > 1:
            surrogate = self.several_sites_surrogate(model, guide, args, kwargs, log_w, guide_trace)
            return -(self.bound(log_w).detach() + surrogate - surrogate.detach()).mean()
        surrogate = sum(_unscaled(model_trace)).reshape(log_w.shape)
        for site in _latent_sites(guide_trace):
            z, fn = site["value"], site["fn"]
            surrogate = surrogate - (fn.log_prob(z.view_as(z)) - fn.log_prob(z.detach())).reshape(log_w.shape)
            if z.requires_grad:  # w~ per (particle, image), broadcast over the event's dimensions
                w = weights.reshape(z.shape[: z.dim() - fn.event_dim] + (1,) * fn.event_dim)
                z.register_hook(lambda grad, w=w: grad * w)
        surrogate = (weights * surrogate).sum(0)
        return -(self.bound(log_w).detach() + surrogate - surrogate.detach()).mean()

    def several_sites_surrogate(self, model, guide, args, kwargs, log_w, guide_trace) -> torch.Tensor:
        """The surrogate above, per image, for a guide of several latent sites."""
        weights = log_w.detach().softmax(0)
        log_q_fixed = sum(_unscaled(replay_at_fixed_z(self, guide, guide_trace, args, kwargs)))
        log_p_fixed = sum(_unscaled(replay_at_fixed_z(self, model, guide_trace, args, kwargs)))
        encoder = weights.pow(2) * (log_w + log_q_fixed.reshape(log_w.shape))
        decoder = (weights - weights.pow(2)) * log_p_fixed.reshape(log_w.shape)
        return (encoder + decoder).sum(0)


class STL_ELBO(device_elbo.Trace_ELBO):
    """Sticking the landing (Roeder, Wu and Duvenaud 2017): the reparameterized ELBO gradient without the
    score term, whose expectation is zero,

        grad_phi ELBO ~ d/dphi [log p(x, z) - log q(z; phi')]  at phi' = phi held fixed,  z = g(eps; phi),

    so that at q = p(z|x) every draw's gradient is exactly zero. Trace_ELBO's surrogate with
    log q(z.detach(); phi) - its value added back: it cancels the parameters' direct path into log q and
    leaves the path through z. For one latent site that is the site's own q at the detached value; for
    several (q(z1|x) q(z2|z1)), q(z2|z1)'s parameters also depend on z1's path, so the guide is replayed at
    the detached values. The loss's value is Trace_ELBO's."""

    def particle_loss(self, model_trace, guide_trace, guide, args, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        particle, surrogate = super().particle_loss(model_trace, guide_trace, guide, args, kwargs)
        at_fixed_z = self.log_q_at_fixed_z(guide, guide_trace, args, kwargs)
        return particle, surrogate - (at_fixed_z - at_fixed_z.detach())

    def log_q_at_fixed_z(self, guide, guide_trace, args, kwargs) -> torch.Tensor:
        """sum of the scaled log q over latent sites at the detached z, differentiable in q's parameters only."""
        sites = _latent_sites(guide_trace)
        if len(sites) > 1:
            sites = _latent_sites(replay_at_fixed_z(self, guide, guide_trace, args, kwargs))
            return sum(site["log_prob"].sum() for site in sites)
        return sum(scale_and_mask(s["fn"].log_prob(s["value"].detach()), s["scale"], s["mask"]).sum() for s in sites)


def replay_at_fixed_z(elbo: pyro.infer.ELBO, program, guide_trace, args, kwargs):
    """The trace of `program` (a model or a guide; in the particles' plate when `elbo` vectorizes them)
    replayed at `guide_trace`'s sample values detached, with its log-densities computed: their gradients
    reach the parameters directly, never through z."""
    fixed = guide_trace.copy()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            fixed.nodes[name] = {**site, "value": site["value"].detach()}
    vectorized = elbo._vectorized_num_particles(program) if elbo.vectorize_particles else program
    trace = poutine.trace(poutine.replay(vectorized, trace=fixed)).get_trace(*args, **kwargs)
    trace.compute_log_prob()
    return trace


def _latent_sites(trace) -> list[dict]:
    return [
        s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]


def _unscaled(trace) -> list[torch.Tensor]:
    """The unscaled log-density of every (non-subsample) sample site, each of shape (particles, batch)."""
    return [s["unscaled_log_prob"] for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _log_w(model_trace, guide_trace) -> torch.Tensor:
    return sum(_unscaled(model_trace)) - sum(_unscaled(guide_trace))
