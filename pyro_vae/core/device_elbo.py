"""Pyro's `Trace_ELBO`, `TraceMeanField_ELBO`, `JitTrace_ELBO` and `TraceEnum_ELBO`, with the same loss and gradients, and no
read of a value back to the host.

Pyro 1.9 reads every sample site's log-density to a Python float (`torch_item`, a `.item()`) to form the
loss's value, and `warn_if_nan` tests the loss, and with a backward hook its gradient, with a Python `if`:
on a GPU each is a synchronization that stalls the step until the device catches up, and none can be
captured in a CUDA graph. Here the value is accumulated from detached tensors instead,

    loss = -sum_sites log_prob_sum.detach() ,   returned as loss + (surrogate - surrogate.detach()),

whose value is the ELBO estimate and whose gradient is the surrogate's, as Pyro's. Non-finite values are
not lost: the training step tests the loss and the gradients on the device (`core.gradients.all_finite`).
The traces, the surrogate and the KL terms are Pyro's own code; only the bookkeeping of the value changes.
"""

from __future__ import annotations

import pyro.infer
import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.util import check_fully_reparametrized, is_validation_enabled
from pyro.poutine.util import site_is_subsample


class DeviceLoss:
    """`differentiable_loss` for a Pyro ELBO whose `_differentiable_loss_particle` gives (loss, surrogate)
    as tensors: their mean over the particles, value of the one and gradient of the other."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss, surrogate = 0.0, 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            particle, surrogate_particle = self.particle_loss(model_trace, guide_trace, guide, args, kwargs)
            loss = loss + particle / self.num_particles
            surrogate = surrogate + surrogate_particle / self.num_particles
        return loss + (surrogate - surrogate.detach())

    def particle_loss(self, model_trace, guide_trace, guide, args, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """One particle's (loss, surrogate): Pyro's. A subclass may change the surrogate, replaying `guide`."""
        return self._differentiable_loss_particle(model_trace, guide_trace)


class Trace_ELBO(DeviceLoss, pyro.infer.Trace_ELBO):
    """Pyro's `Trace_ELBO`: -ELBO = -(sum_model log p - sum_guide log q), and its surrogate with the score
    function term of every site that is not reparameterized."""

    def _differentiable_loss_particle(self, model_trace, guide_trace) -> tuple[torch.Tensor, torch.Tensor]:
        elbo, surrogate, log_r = 0.0, 0.0, None
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"].detach()
                surrogate = surrogate + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                elbo = elbo - site["log_prob_sum"].detach()
                if not is_identically_zero(entropy_term):
                    surrogate = surrogate - entropy_term.sum()
                if not is_identically_zero(score_function_term):
                    log_r = _compute_log_r(model_trace, guide_trace) if log_r is None else log_r
                    surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
        return -elbo, -surrogate


class TraceMeanField_ELBO(DeviceLoss, pyro.infer.TraceMeanField_ELBO):
    """Pyro's `TraceMeanField_ELBO`: -ELBO = -(sum_observed log p - sum_latent KL(q || p)), the KL in
    closed form where `kl_divergence` knows the pair and the sites' order makes it exact (`closed_form_sites`),
    else its Monte Carlo estimate log q - log p."""

    def _get_trace(self, model, guide, args, kwargs):
        """Pyro's traces, without its warning when model and guide order their sites differently (as a
        two-layer VAE's do): here that order decides which sites take the closed form."""
        return pyro.infer.Trace_ELBO._get_trace(self, model, guide, args, kwargs)

    def _differentiable_loss_particle(self, model_trace, guide_trace) -> tuple[torch.Tensor, torch.Tensor]:
        elbo, closed_form = 0.0, closed_form_sites(model_trace, guide_trace)
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] == "sample":
                if model_site["is_observed"]:
                    elbo = elbo + model_site["log_prob_sum"]
                else:
                    elbo = elbo - _kl_term(model_site, guide_trace.nodes[name], name in closed_form)
        for name, guide_site in guide_trace.nodes.items():  # the guide's auxiliary sites
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                assert guide_site["infer"].get("is_auxiliary")
                if is_validation_enabled():
                    check_fully_reparametrized(guide_site)
                elbo = elbo - guide_site["score_parts"].entropy_term.sum()
        return -elbo.detach(), -elbo


def closed_form_sites(model_trace, guide_trace) -> set[str]:
    """The latent sites s whose term E_q[log q(z_s|.) - log p(z_s|.)] equals E_q[KL(q(z_s|.) || p(z_s|.))]:
    those whose every latent predecessor in the model also precedes s in the guide. What p(z_s|.) reads is
    then drawn before z_s, and given it z_s ~ q(z_s|.), so the inner expectation is the KL (Pyro's precise
    mean-field condition: no parent in the model is a descendant in the guide). For a two-layer VAE, model
    z2, z1 and guide z1, z2: KL(q(z2|z1) || N(0, I)) is closed, z1's term is Monte Carlo."""
    model_order, guide_order = (
        [
            n
            for n, s in trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
        ]
        for trace in (model_trace, guide_trace)
    )
    return {
        name
        for i, name in enumerate(model_order)
        if name in guide_order and set(model_order[:i]) <= set(guide_order[: guide_order.index(name)])
    }


def _kl_term(model_site: dict, guide_site: dict, closed_form: bool) -> torch.Tensor:
    """KL(q || p) of one latent site, summed, with the guide site's scale and mask: closed form where
    allowed, or log q - log p at the sampled z where not, or where no closed form is registered."""
    if is_validation_enabled():
        check_fully_reparametrized(guide_site)
    kl = _registered_kl(guide_site["fn"], model_site["fn"]) if closed_form else None
    if kl is None:
        return guide_site["score_parts"].entropy_term.sum() - model_site["log_prob_sum"]
    kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
    if torch.is_tensor(kl):
        return kl.sum()
    return kl * torch.Size(guide_site["fn"].batch_shape).numel()


def _registered_kl(q, p):
    """KL(q || p) by `kl_divergence`, or None where no closed form is registered for the pair."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


class JitTrace_ELBO(pyro.infer.JitTrace_ELBO):
    """Pyro's `JitTrace_ELBO` (its compiled loss and surrogate, already tensors), without `warn_if_nan`."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss, surrogate = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        return loss + (surrogate - surrogate.detach())


class TraceEnum_ELBO(pyro.infer.TraceEnum_ELBO):
    """Pyro's `TraceEnum_ELBO` (the sites marked for enumeration summed out exactly, by Pyro's dice ELBO), its
    loss formed as Pyro's `JitTraceEnum_ELBO` forms it: without the two reads on the host of Pyro's eager
    `differentiable_loss` (the test that the loss requires a gradient, which also refuses a loss traced below
    autograd, as --compile traces it; and `warn_if_nan`)."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = elbo + _compute_dice_elbo(model_trace, guide_trace)
        return elbo * (-1.0 / self.num_particles)
