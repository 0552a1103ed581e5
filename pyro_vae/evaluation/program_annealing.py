"""log p(x) of a user's Pyro program by annealed importance sampling (`annealing.ais`'s chains and HMC moves),
its latent sites read as one vector per (chain, image):

    z = (z_s flattened, for each latent site s of the model, in the order the model draws them)
    log p(z) = sum_{latent s} log p(z_s | its parents),    log p(x|z) = sum_{observed s} log p(x_s | ...)

both from one replay of the model at z, conditioned, in a plate of chains outside the program's plate over
the images. The chains start from the prior, drawn by running the model (each latent site from its
conditional given the sites before it). Every latent site must be continuous with real support (a Normal's)
and inside the plate over the images; another (a discrete or enumerated site, a positive one) is refused in
one line naming it.
"""

from __future__ import annotations

import math
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.util import site_is_subsample

from pyro_vae.core.program import Program
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation.annealing import AnnealedEstimate, Annealing, annealed, check_images, sigmoid_schedule


class ProgramLatents:
    """A program's latent sites over a batch of its inputs (images first), as the latent-variable model that
    `annealing`'s chains move in: `z_dim`, `log_prior(z)`, `log_likelihood(x, z)` per (chain, image)."""

    def __init__(self, program: Program, batch: tuple[torch.Tensor, ...]):
        self.program, self.batch = program, batch
        trace = self._trace({}, chains=1)
        self.sites = [(name, tuple(site["fn"].event_shape)) for name, site in _latent(trace).items()]
        self.z_dim = sum(math.prod(shape) for _, shape in self.sites)

    def prior_draws(self, chains: int, generator: torch.Generator) -> torch.Tensor:
        """(chains, images, z_dim) draws from the prior, the model run with a seed taken from `generator`."""
        x = self.batch[0]
        seed = int(torch.randint(2**62, (), generator=generator, device=x.device))
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []), torch.no_grad():
            torch.manual_seed(seed)
            trace = self._trace({}, chains)
        return self.join(trace, chains)

    def join(self, trace: poutine.Trace, chains: int) -> torch.Tensor:
        images = self.batch[0].shape[0]
        values = [trace.nodes[name]["value"].expand(chains, images, *shape) for name, shape in self.sites]
        return torch.cat([v.reshape(chains, images, -1) for v in values], -1)

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """z (chains, images, z_dim) as each latent site's value (chains, images, *event shape)."""
        sizes = [math.prod(shape) for _, shape in self.sites]
        return {name: v.reshape(*z.shape[:2], *shape) for (name, shape), v in zip(self.sites, z.split(sizes, -1))}

    def log_terms(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(z), log p(x|z)) per (chain, image): the model replayed at z."""
        trace = self._trace(self.split(z), z.shape[0])
        latent = {name for name, _ in self.sites}
        log_prior = log_likelihood = 0.0
        for name, site in _sample_sites(trace).items():
            log_p = site["unscaled_log_prob"]  # log p itself: no scale the program may set
            if site["mask"] is not None:
                log_p = torch.where(torch.as_tensor(site["mask"], device=log_p.device), log_p, 0.0)
            if name in latent:
                log_prior = log_prior + log_p
            else:
                log_likelihood = log_likelihood + log_p
        return log_prior, log_likelihood

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return self.log_terms(z)[0]

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_terms(z)[1]

    def _trace(self, values: dict[str, torch.Tensor], chains: int) -> poutine.Trace:
        with pyro.plate("chains", chains, dim=-2):
            trace = poutine.trace(poutine.condition(self.program.run_model, data=values)).get_trace(*self.batch)
        trace.compute_log_prob()
        return trace


def program_ais(
    program: Program,
    x: torch.Tensor,
    annealing: Annealing = Annealing(),
    labels: torch.Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnnealedEstimate:
    """Forward AIS from the program's prior: a stochastic lower bound on log p(x) per image of x (with their
    `labels` for a program of images and labels), run as `annealing` says, as `annealing.ais` runs it for
    the VAE; `progress(n)` is called as n images finish a step."""
    check_images(program, x)
    inputs = program.inputs(x, labels)
    generator = torch.Generator(device=x.device).manual_seed(annealing.seed)
    latents: dict[int, ProgramLatents] = {}

    def model_of(first: int, count: int) -> ProgramLatents:
        if first not in latents:
            latents[first] = ProgramLatents(program, tuple(t[first : first + count] for t in inputs))
        return latents[first]

    def start(chunk: torch.Tensor, first: int) -> torch.Tensor:
        return model_of(first, chunk.shape[0]).prior_draws(annealing.chains, generator)

    return annealed(model_of, x, start, sigmoid_schedule(annealing.steps), "lower", annealing, generator, progress)


def _sample_sites(trace: poutine.Trace) -> dict[str, dict]:
    return {
        name: site for name, site in trace.nodes.items() if site["type"] == "sample" and not site_is_subsample(site)
    }


def _latent(trace: poutine.Trace) -> dict[str, dict]:
    """The model's latent sites, each checked: continuous with real support, not enumerated."""
    latent = {name: site for name, site in _sample_sites(trace).items() if not site["is_observed"]}
    for name, site in latent.items():
        support = site["fn"].support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        if site["infer"].get("enumerate") or support not in (constraints.real, constraints.real_vector):
            raise ConfigError(
                f"AIS moves the latent sites by Hamiltonian Monte Carlo, which needs each continuous with real "
                f"support; the model's site {name!r} ({type(site['fn']).__name__}) is not: use evaluate()'s "
                "importance sampling"
            )
    return latent
