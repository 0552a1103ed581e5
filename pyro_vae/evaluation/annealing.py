"""log p(x) by annealed importance sampling (AIS), and its sandwich by bidirectional Monte Carlo (BDMC).

AIS (Neal 2001) moves C chains per image from the prior to the posterior through the geometric path

    f_t(z) = p(z) p(x|z)^beta_t,    0 = beta_0 < beta_1 < ... < beta_T = 1,

each move a Hamiltonian Monte Carlo step that leaves f_t invariant, and weighs each chain by

    log w = sum_{t=1}^T (beta_t - beta_{t-1}) log p(x | z_{t-1}),

so that E[w] = p(x): log (1/C) sum_c w_c is a stochastic lower bound on log p(x) (Jensen), far tighter than
importance sampling with the encoder as proposal once T is large. Run backwards, from an exact posterior
sample (on data simulated from the model, the z that made x), the same sum estimates 1/p(x), and
-log (1/C) sum_c w_c is a stochastic upper bound (Grosse, Ghahramani and Adams 2015). The two bounds
sandwich log p(x) on simulated data, and their gap bounds either's error (Wu, Burda, Salakhutdinov and
Grosse 2017). The chains start from the prior, as theirs do; the encoder is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from pyro.ops.integrator import velocity_verlet

from pyro_vae.core import analytic
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import importance
from pyro_vae.evaluation.likelihood import check_support

TARGET_ACCEPTANCE = 0.65  # HMC's step size moves towards this acceptance rate, chain by chain
STEP_SIZE_RANGE = (1e-4, 0.5)
MAX_STEPS, MAX_CHAINS, MAX_LEAPFROG = 1_000_000, 10_000, 100


@dataclass(frozen=True)
class Annealing:
    """How AIS runs: T = `steps` intermediate distributions, `chains` chains per image, HMC moves of
    `leapfrog` velocity-Verlet steps, the `seed` of every draw, and images in chunks of at most `max_rows`
    (chain, image) pairs, which bounds the memory."""

    steps: int = 1000
    chains: int = 16
    leapfrog: int = 10
    seed: int = 0
    max_rows: int = 8192

    def __post_init__(self) -> None:
        for name, high in (("steps", MAX_STEPS), ("chains", MAX_CHAINS), ("leapfrog", MAX_LEAPFROG), ("max_rows", 10**9)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigError(f"AIS {name} must be a whole number from 1 to {high:,}, got {value!r}")


@dataclass(frozen=True)
class AnnealedEstimate:
    """An AIS estimate of the mean log p(x), in nats per image: a stochastic lower bound (forward AIS) or
    upper bound (reverse AIS from exact posterior samples), with what says how well the chains mixed.

    `per_image` is each image's log (1/C) sum_c w_c (negated for the upper bound), `per_image_variance` its
    jackknife variance over the C chains, `standard_error` that of the mean; `acceptance` the HMC acceptance
    rate over every move of every chain, `step_size` the chains' final mean step size."""

    bound: str  # "lower" or "upper"
    value: float
    standard_error: float
    steps: int
    chains: int
    per_image: torch.Tensor
    per_image_variance: torch.Tensor
    acceptance: float
    step_size: float


@dataclass(frozen=True)
class Sandwich:
    """log p(x) of images simulated from the model, between a lower and an upper bound."""

    lower: AnnealedEstimate
    upper: AnnealedEstimate

    @property
    def gap(self) -> float:
        """Upper minus lower bound, in nats per image: how far either can be from log p(x)."""
        return self.upper.value - self.lower.value


def sigmoid_schedule(steps: int, radius: float = 4.0) -> torch.Tensor:
    """beta_0 = 0, ..., beta_T = 1 along a sigmoid, dense at both ends (Grosse et al.'s schedule):
    beta_t ∝ sigmoid(radius (2t/T - 1)), shifted and scaled to run from 0 to 1. Shape (T + 1,), float64."""
    s = torch.sigmoid(torch.linspace(-radius, radius, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def ais(
    vae: analytic.LatentVariableModel,
    x: torch.Tensor,
    annealing: Annealing = Annealing(),
    progress: Callable[[int], None] | None = None,
) -> AnnealedEstimate:
    """Forward AIS from the prior: a stochastic lower bound on log p(x) per image, run as `annealing` says;
    `progress(n)` is called as n images finish a step."""
    check_images(vae, x)
    generator = torch.Generator(device=x.device).manual_seed(annealing.seed)

    def start(chunk: torch.Tensor, _: int) -> torch.Tensor:
        shape = (annealing.chains, chunk.shape[0], vae.z_dim)
        noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        return vae.prior_from_noise(noise).detach()

    betas = sigmoid_schedule(annealing.steps)
    return annealed(lambda first, count: vae, x, start, betas, "lower", annealing, generator, progress)


def reverse_ais(
    vae: analytic.LatentVariableModel,
    x: torch.Tensor,
    z: torch.Tensor,
    annealing: Annealing = Annealing(),
    progress: Callable[[int], None] | None = None,
) -> AnnealedEstimate:
    """Reverse AIS from exact posterior samples z (batch, z_dim), one per image of x (on simulated data,
    the z that made x): the path run from beta = 1 to 0 estimates 1/p(x) without bias, so its negated log
    is a stochastic upper bound on log p(x). Arguments as in `ais`."""
    check_images(vae, x)
    if z.shape != (x.shape[0], vae.z_dim):
        raise ConfigError(f"reverse AIS needs one z of size {vae.z_dim} per image, got shape {tuple(z.shape)}")
    generator = torch.Generator(device=x.device).manual_seed(annealing.seed)

    def start(chunk: torch.Tensor, first: int) -> torch.Tensor:
        return z[first : first + chunk.shape[0]].to(x.dtype).expand(annealing.chains, -1, -1).clone()

    betas = sigmoid_schedule(annealing.steps).flip(0)
    return annealed(lambda first, count: vae, x, start, betas, "upper", annealing, generator, progress)


def simulate(vae, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images from the model and the latents that made them: z ~ p(z), x ~ p(x|z) (`vae.likelihood`),
    drawn under `seed` without touching the global random state."""
    weight = next(vae.parameters())
    cuda = [weight.device] if weight.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        z = vae.prior_from_noise(torch.randn((n, vae.z_dim), device=weight.device, dtype=weight.dtype))
        return vae.likelihood(z).sample(), z


def bdmc(
    vae: analytic.LatentVariableModel,
    x: torch.Tensor,
    z: torch.Tensor,
    annealing: Annealing = Annealing(),
    progress: Callable[[int], None] | None = None,
) -> Sandwich:
    """Bidirectional Monte Carlo on simulated pairs (x, z): forward AIS for the lower bound and reverse AIS
    from z for the upper (with the next seed); `progress` counts both passes (2 x steps x images in all)."""
    lower = ais(vae, x, annealing, progress)
    upper = reverse_ais(vae, x, z, replace(annealing, seed=annealing.seed + 1), progress)
    return Sandwich(lower, upper)


def check_images(vae, x: torch.Tensor) -> None:
    """A batch of at least one image, in the likelihood's support."""
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(f"AIS needs a batch of at least one image, got shape {tuple(x.shape)}")
    check_support(vae, x)


def annealed(model_of, x, start, betas, bound, annealing, generator, progress) -> AnnealedEstimate:
    """Run the chains of every chunk of images along `betas` (from `start(chunk, first)`, with the model
    `model_of(first, count)` gives for the chunk's images), their log-weights reduced per image."""
    chains = annealing.chains
    images = max(1, min(x.shape[0], annealing.max_rows // chains))
    per_image, variance, accepted, step_sizes = [], [], 0.0, []
    for first in range(0, x.shape[0], images):
        chunk = x[first : first + images]
        log_w, acceptance, step = _anneal_chunk(
            model_of(first, chunk.shape[0]), chunk, start(chunk, first), betas, annealing.leapfrog, generator, progress
        )
        sign = 1.0 if bound == "lower" else -1.0
        per_image.append(sign * analytic.log_mean_exp(log_w))
        variance.append(importance.jackknife_variance(log_w))
        accepted += acceptance.sum().item()
        step_sizes.append(step.reshape(-1))
    per_image, variance = torch.cat(per_image).cpu(), torch.cat(variance).cpu()
    n, moves = per_image.shape[0], max(1, len(betas) - 2)
    return AnnealedEstimate(
        bound=bound,
        value=per_image.mean().item(),
        standard_error=variance.sum().sqrt().item() / n,
        steps=len(betas) - 1,
        chains=chains,
        per_image=per_image,
        per_image_variance=variance,
        acceptance=accepted / (n * chains * moves),
        step_size=torch.cat(step_sizes).mean().item(),
    )


def _anneal_chunk(vae, x, z, betas, leapfrog, generator, progress):
    """One chunk's chains along the path: log w += (beta_t - beta_{t-1}) log p(x|z), then an HMC move
    that leaves f_t invariant (none after the last). Returns the log-weights (C, batch) in float64, each
    chain's number of accepted moves and its final step size."""
    log_w = torch.zeros(z.shape[:2], dtype=torch.float64, device=x.device)
    accepted = torch.zeros_like(log_w)
    step = torch.full((*z.shape[:2], 1), 0.05, dtype=x.dtype, device=x.device)
    rate = torch.full_like(log_w, TARGET_ACCEPTANCE)
    for t in range(1, len(betas)):
        beta = betas[t].item()
        potential = _Potential(vae, x, beta)
        grads, _ = potential.gradient(z)
        log_w += (betas[t] - betas[t - 1]) * potential.log_lik.double()
        if t < len(betas) - 1:
            z, accept = _hmc_move(potential, z, grads, step, leapfrog, generator)
            accepted += accept
            rate = 0.9 * rate + 0.1 * accept
            step = (step * torch.where(rate > TARGET_ACCEPTANCE, 1.02, 0.98).unsqueeze(-1).to(x.dtype)).clamp(
                *STEP_SIZE_RANGE
            )
        if progress is not None:
            progress(x.shape[0])
    return log_w, accepted.sum(0), step


class _Potential:
    """U(z) = -log p(z) - beta log p(x|z) per chain, summed for `velocity_verlet` (the chains are
    independent, so the sum's gradient is each chain's); the last evaluation's per-chain energy and
    log p(x|z) are kept."""

    def __init__(self, vae, x: torch.Tensor, beta: float) -> None:
        self.vae, self.x, self.beta = vae, x, beta

    def __call__(self, sites: dict[str, torch.Tensor]) -> torch.Tensor:
        z = sites["z"]
        log_lik = self.vae.log_likelihood(self.x, z)
        energy = -(self.vae.log_prior(z) + self.beta * log_lik)
        self.log_lik, self.energy = log_lik.detach(), energy.detach()
        return energy.sum()

    def gradient(self, z: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """dU/dz at z (and U), with this potential's per-chain energy and log p(x|z) kept."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            energy = self({"z": z})
            return {"z": torch.autograd.grad(energy, z)[0]}, self.energy


def _hmc_move(potential: _Potential, z: torch.Tensor, grads: dict, step: torch.Tensor, leapfrog: int, generator):
    """One HMC move per chain: momentum r ~ N(0, I), `leapfrog` velocity-Verlet steps of the chain's own
    size, accepted with probability min(1, exp(H(z, r) - H(z', r'))), H = U + |r|^2 / 2; a proposal whose
    energy is not finite is rejected. Returns the new z and each chain's acceptance (0 or 1)."""
    r = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    start_energy = potential.energy + 0.5 * r.pow(2).sum(-1)
    with torch.enable_grad():
        new, new_r, _, _ = velocity_verlet({"z": z}, {"z": r}, potential, lambda m: m, step, leapfrog, grads)
    end_energy = potential.energy + 0.5 * new_r["z"].pow(2).sum(-1)
    log_u = torch.rand(start_energy.shape, generator=generator, device=z.device, dtype=z.dtype).log()
    accept = (log_u < start_energy - end_energy) & end_energy.isfinite()
    return torch.where(accept.unsqueeze(-1), new["z"].detach(), z), accept.to(torch.float64)
