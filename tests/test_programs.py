"""Your own Pyro program (a model and its guide) trained by the engine: it trains, resumes to bit-identical
weights, loads back and evaluates; under the compiled graph it equals eager; a discrete site is summed out
exactly by `enum`, with a closed form to check; every refusal before the first step, in one line."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn import functional

import pyro_vae
from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.program import Program, takes_labels
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation.annealing import Annealing
from pyro_vae.evaluation.program_annealing import program_ais
from pyro_vae.training.checkpoint.values import CheckpointError
from pyro_vae.training.run import weights_digest

ROOT = Path(__file__).resolve().parents[1]
PIXELS = 12
QUIET = dict(progress=False, log=lambda line: None)


def prototype_draws(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n binary images of 12 pixels, each one of three prototypes with every pixel flipped with probability 0.1,
    and which prototype each is (its label)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.tensor([[1.0] * 6 + [0.0] * 6, [0.0] * 6 + [1.0] * 6, [1.0, 0.0] * 6])
    kinds = torch.randint(3, (n,), generator=g)
    flips = (torch.rand(n, PIXELS, generator=g) < 0.1).float()
    return (prototypes[kinds] + flips) % 2, kinds


def patterns(n: int, seed: int) -> torch.Tensor:
    return prototype_draws(n, seed)[0]


DATA = (patterns(96, 0), patterns(32, 1))


def three_site_program() -> tuple:
    """A model of three latent sites and its guide, as functions with `pyro.module` and `pyro.param`:

    z1 ~ N(0, I_2), z2 ~ N(0, 1) (a scalar site), z3 ~ N(A z1 + z2, 0.5^2 I_2), x ~ Bernoulli(decoder(z3, z2))
    q(z1|x) q(z2|x) q(z3|x, z1), z3's scale a constrained pyro.param."""
    top, decoder = nn.Linear(2, 2), nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, PIXELS))
    encoder = nn.Sequential(nn.Linear(PIXELS, 16), nn.Tanh(), nn.Linear(16, 8))

    def model(x):
        pyro.module("top", top)
        pyro.module("decoder", decoder)
        with pyro.plate("images", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(()), 1.0))
            z3 = pyro.sample("z3", dist.Normal(top(z1) + z2.unsqueeze(-1), 0.5).to_event(1))
            logits = decoder(torch.cat([z3, z2.unsqueeze(-1)], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        scale = pyro.param("z3_scale", lambda: torch.full((2,), 0.5), constraint=constraints.positive)
        with pyro.plate("images", x.shape[0]):
            h = encoder(x)
            z1 = pyro.sample("z1", dist.Normal(h[..., :2], functional.softplus(h[..., 2:4]) + 1e-3).to_event(1))
            pyro.sample("z2", dist.Normal(h[..., 4], functional.softplus(h[..., 5]) + 1e-3))
            pyro.sample("z3", dist.Normal(h[..., 6:] + z1, scale).to_event(1))

    return model, guide


class ThreeSiteModel(pyro.nn.PyroModule):
    """The model of `three_site_program` as a PyroModule: its networks are its attributes."""

    def __init__(self):
        super().__init__()
        self.top, self.decoder = nn.Linear(2, 2), nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, PIXELS))

    def forward(self, x):
        with pyro.plate("images", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(()), 1.0))
            z3 = pyro.sample("z3", dist.Normal(self.top(z1) + z2.unsqueeze(-1), 0.5).to_event(1))
            logits = self.decoder(torch.cat([z3, z2.unsqueeze(-1)], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


class ThreeSiteGuide(pyro.nn.PyroModule):
    """The guide of `three_site_program` as a PyroModule, z3's scale a PyroParam."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(PIXELS, 16), nn.Tanh(), nn.Linear(16, 8))
        self.z3_scale = pyro.nn.PyroParam(torch.full((2,), 0.5), constraint=constraints.positive)

    def forward(self, x):
        with pyro.plate("images", x.shape[0]):
            h = self.encoder(x)
            z1 = pyro.sample("z1", dist.Normal(h[..., :2], functional.softplus(h[..., 2:4]) + 1e-3).to_event(1))
            pyro.sample("z2", dist.Normal(h[..., 4], functional.softplus(h[..., 5]) + 1e-3))
            pyro.sample("z3", dist.Normal(h[..., 6:] + z1, self.z3_scale).to_event(1))


def program_parts(modules: bool = False) -> dict:
    """The three-site program, its networks initialized from seed 0: as functions, or as PyroModules."""
    torch.manual_seed(0)
    if modules:
        return dict(model=ThreeSiteModel(), guide=ThreeSiteGuide())
    model, guide = three_site_program()
    return dict(model=model, guide=guide)


def config(tmp_path, name: str, **settings) -> pyro_vae.TrainConfig:
    defaults = dict(epochs=2, batch_size=32, eval_samples=20, out=str(tmp_path / name))
    return pyro_vae.TrainConfig(**{**defaults, **settings})


def test_a_three_site_program_trains_resumes_exactly_and_loads_back(tmp_path):
    straight = pyro_vae.train(config(tmp_path, "a"), data=DATA, **program_parts(), **QUIET)
    pyro_vae.train(config(tmp_path, "b", epochs=1), data=DATA, **program_parts(), **QUIET)
    resumed = pyro_vae.resume(tmp_path / "b", epochs=2, data=DATA, **program_parts(), **QUIET)
    assert weights_digest(straight.vae) == weights_digest(resumed.vae)
    assert [m["test_loss"] for m in straight.metrics] == [m["test_loss"] for m in resumed.metrics]
    assert straight.metrics[-1]["test_loss"] < straight.metrics[0]["test_loss"]  # it learns
    assert "z3_scale" in straight.vae.params and "decoder$$$0:weight" in straight.vae.params
    loaded = pyro_vae.load_run(tmp_path / "a", data=DATA, **program_parts())
    assert weights_digest(loaded.vae) == weights_digest(straight.vae)
    evaluation = loaded.evaluate(samples=50, seed=3)
    assert evaluation.negative_elbo == pytest.approx(straight.evaluate(samples=50, seed=3).negative_elbo, abs=1e-12)
    assert math.isfinite(evaluation.log_likelihood.value)
    assert evaluation.log_likelihood.value > -evaluation.negative_elbo - 5 * evaluation.log_likelihood.standard_error


def test_the_program_under_the_compiled_graph_equals_eager_bit_for_bit(tmp_path):
    eager = pyro_vae.train(config(tmp_path, "eager", epochs=1), data=DATA, **program_parts(modules=True), **QUIET)
    graph = config(tmp_path, "graph", epochs=1, compile=True, compile_backend="graph")
    compiled = pyro_vae.train(graph, data=DATA, **program_parts(modules=True), **QUIET)
    assert weights_digest(eager.vae) == weights_digest(compiled.vae)
    assert eager.metrics[-1]["test_loss"] == compiled.metrics[-1]["test_loss"]


def test_a_program_of_pyro_module_networks_is_refused_by_the_compiled_graph_naming_them(tmp_path):
    graph = config(tmp_path, "graph", epochs=1, compile=True, compile_backend="graph")
    with pytest.raises(ConfigError, match=r"registers with pyro.module \(decoder, encoder, top\)"):
        pyro_vae.train(graph, data=DATA, **program_parts(), **QUIET)


def test_a_program_of_pyro_modules_trains_with_its_parameters_its_own(tmp_path):
    """A PyroModule model and guide keep their parameters local (none in Pyro's param store): two runs at
    once never share a value."""

    class Model(pyro.nn.PyroModule):
        def __init__(self):
            super().__init__()
            self.decoder = nn.Linear(2, PIXELS)

        def forward(self, x):
            with pyro.plate("images", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    class Guide(pyro.nn.PyroModule):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(PIXELS, 4)
            self.shrink = pyro.nn.PyroParam(torch.tensor(0.5), constraint=constraints.unit_interval)

        def forward(self, x):
            with pyro.plate("images", x.shape[0]):
                loc, log_scale = self.encoder(x).chunk(2, -1)
                pyro.sample("z", dist.Normal(loc, self.shrink * log_scale.exp()).to_event(1))

    pyro.clear_param_store()
    run = pyro_vae.train(config(tmp_path, "m", epochs=1), data=DATA, model=Model(), guide=Guide(), **QUIET)
    assert len(pyro.get_param_store()) == 0
    assert {"user_model.decoder.weight", "user_guide.shrink_unconstrained"} <= set(run.vae.state_dict())
    assert math.isfinite(run.metrics[-1]["test_loss"])


def mixture_program(pi: torch.Tensor, mu: torch.Tensor, w: torch.Tensor, sigma: float, q: nn.Module) -> tuple:
    """y ~ Categorical(pi), z | y ~ N(mu_y, I), x | z ~ N(W z, sigma^2 I), y enumerated in the model; the guide
    q(z|x) = N(a(x), diag s(x)^2) draws z alone."""

    def model(x):
        with pyro.plate("images", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(pi), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(mu[y], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, sigma).to_event(1), obs=x)

    def guide(x):
        pyro.module("q", q)
        with pyro.plate("images", x.shape[0]):
            loc, log_scale = q(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide


def mixture(dtype=torch.float64) -> tuple:
    g = torch.Generator().manual_seed(4)
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=dtype)
    mu = 2 * torch.randn(3, 2, generator=g, dtype=dtype)
    w = torch.randn(5, 2, generator=g, dtype=dtype)
    q = nn.Linear(5, 4).to(dtype)
    return pi, mu, w, 0.7, q


def mixture_log_px(x: torch.Tensor, pi, mu, w, sigma) -> torch.Tensor:
    """The closed form: log p(x) = logsumexp_y [log pi_y + log N(x; W mu_y, W W^T + sigma^2 I)]."""
    covariance = w @ w.T + sigma**2 * torch.eye(w.shape[0], dtype=x.dtype)
    per_component = dist.MultivariateNormal(mu @ w.T, covariance).log_prob(x.unsqueeze(-2))
    return (pi.log() + per_component).logsumexp(-1)


def test_the_enumerated_elbo_is_the_hand_derived_one_on_the_same_noise():
    """-ELBO of TraceEnum_ELBO (y summed out in the model) equals, on the guide's own draws z,
    -mean_i [log sum_y pi_y N(z_i; mu_y, I) + log N(x_i; W z_i, sigma^2 I) - log q(z_i|x_i)] to 1e-10."""
    pi, mu, w, sigma, q = mixture()
    torch.manual_seed(5)
    x = torch.randn(7, 5, dtype=torch.float64) * 2
    program = Program(*mixture_program(pi, mu, w, sigma, q), ModelConfig(x_dim=5)).discover((x,), "enum")
    loss = ELBOLoss(program, build_elbo("enum"))
    pyro.set_rng_seed(9)
    value = loss(x, 1.0)
    pyro.set_rng_seed(9)
    guide_trace = pyro.poutine.trace(program.run_guide).get_trace(x)
    z, q_z = guide_trace.nodes["z"]["value"], guide_trace.nodes["z"]["fn"]
    log_prior = (pi.log() + dist.Normal(mu, 1.0).to_event(1).log_prob(z.unsqueeze(-2))).logsumexp(-1)
    log_lik = dist.Normal(z @ w.T, sigma).to_event(1).log_prob(x)
    hand = -(log_prior + log_lik - q_z.log_prob(z)).mean()
    assert torch.allclose(value, hand, rtol=0, atol=1e-10)


def test_the_importance_sampled_log_px_of_an_enumerated_mixture_meets_its_closed_form():
    """log p(x) of the mixture, y summed out exactly and z importance-sampled from a guide fitted by enum
    SVI, within 5 standard errors of the closed form (float64)."""
    pi, mu, w, sigma, q = mixture()
    torch.manual_seed(6)
    y = torch.multinomial(pi, 40, replacement=True)
    x = (mu[y] + torch.randn(40, 2, dtype=torch.float64)) @ w.T + sigma * torch.randn(40, 5, dtype=torch.float64)
    program = Program(*mixture_program(pi, mu, w, sigma, q), ModelConfig(x_dim=5)).discover((x,), "enum")
    loss, optimizer = ELBOLoss(program, build_elbo("enum", 4)), torch.optim.Adam(program.parameters(), 0.02)
    for _ in range(300):
        optimizer.zero_grad()
        loss(x, 1.0).backward()
        optimizer.step()
    estimate = pyro_vae.log_likelihood(program, x, 2000, seed=1)
    exact = mixture_log_px(x, pi, mu, w, sigma)
    assert abs(estimate.value - exact.mean().item()) < 5 * estimate.standard_error
    assert estimate.value <= exact.mean().item() + 5 * estimate.standard_error


def test_an_enumerated_mixture_trains_under_the_engine(tmp_path):
    pi, mu, w, sigma, q = mixture(torch.float32)
    x = torch.rand(64, 5)  # images in [0, 1], as the engine's data checks ask
    model, guide = mixture_program(pi, mu, w, sigma, q)
    run = pyro_vae.train(
        config(tmp_path, "enum", epochs=1, estimator="enum", binarization="none", eval_samples=10),
        data=(x[:48], x[48:]), model=model, guide=guide, **QUIET,
    )  # fmt: skip
    assert math.isfinite(run.metrics[-1]["test_log_likelihood"])


def no_plate_model(x):
    pyro.sample("z", dist.Normal(0.0, 1.0))


def unparameterized(x):
    with pyro.plate("images", x.shape[0]):
        pyro.sample("x", dist.Bernoulli(0.5).expand([x.shape[0], PIXELS]).to_event(1), obs=x)


def empty_guide(x):
    pass


def discrete_guide(x):
    probs = pyro.param("p", torch.tensor(0.5), constraint=constraints.unit_interval)
    with pyro.plate("images", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(probs))


def discrete_model(x):
    with pyro.plate("images", x.shape[0]):
        y = pyro.sample("y", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Bernoulli((0.25 + 0.5 * y).unsqueeze(-1).expand(y.shape + (PIXELS,))).to_event(1), obs=x)


def enumerated_model(x):
    share = pyro.param("share", torch.tensor(0.5), constraint=constraints.unit_interval)
    with pyro.plate("images", x.shape[0]):
        y = pyro.sample("y", dist.Bernoulli(share), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Bernoulli((0.25 + 0.5 * y).unsqueeze(-1).expand(y.shape + (PIXELS,))).to_event(1), obs=x)


def one_param_guide(x):
    pyro.param("unused", torch.zeros(1))


@pytest.mark.parametrize(
    "parts, settings, message",
    [
        (dict(model=no_plate_model, guide=empty_guide), {}, "guide does not sample the model's latent site(s) 'z'"),
        (dict(model=unparameterized, guide=empty_guide), {}, "read no parameter"),
        (dict(model=discrete_model, guide=discrete_guide), dict(estimator="stl"), "site 'y' (Bernoulli) cannot be reparameterized"),
        (dict(model=discrete_model, guide=discrete_guide), dict(estimator="iwae", num_particles=2), "cannot be reparameterized"),
        (dict(model=enumerated_model, guide=one_param_guide), {}, "is marked for enumeration, which only"),
        (dict(model=discrete_model), {}, "give model=... and guide=..."),
        (dict(model=discrete_model, guide=discrete_guide), dict(init_output_bias=True), "init_output_bias sets"),
        (dict(model=discrete_model, guide=discrete_guide), dict(estimator="jit-trace"), "use estimator trace"),
        (dict(model=discrete_model, guide=discrete_guide), dict(model=ModelConfig(z_dim=10, guide="local")), "leave z_dim, guide at the default"),
    ],
)  # fmt: skip
def test_a_program_that_cannot_train_is_refused_in_one_line_before_the_first_step(tmp_path, parts, settings, message):
    with pytest.raises(ConfigError, match=None) as caught:
        pyro_vae.train(config(tmp_path, "r", epochs=1, **settings), data=DATA, **parts, **QUIET)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_a_discrete_guide_site_trains_by_the_score_function_and_an_enumerated_one_by_enum(tmp_path):
    run = pyro_vae.train(
        config(tmp_path, "s", epochs=1), data=DATA, model=discrete_model, guide=discrete_guide, **QUIET
    )
    assert math.isfinite(run.metrics[-1]["test_loss"])
    enumerated = config(tmp_path, "e", epochs=1, estimator="enum")
    run = pyro_vae.train(enumerated, data=DATA, model=enumerated_model, guide=one_param_guide, **QUIET)
    assert run.metrics[-1]["test_kl"] == pytest.approx(0.0, abs=1e-12)  # y summed out: the guide draws nothing


def test_a_parameter_first_read_after_the_first_run_is_refused():
    calls = []

    def guide(x):
        calls.append(1)
        pyro.param("always", torch.zeros(1))
        if len(calls) > 3:
            pyro.param("late", torch.zeros(1))

    program = Program(enumerated_model, guide, ModelConfig(x_dim=PIXELS)).discover((DATA[0][:2],), "enum")
    with pytest.raises(ConfigError, match="'late' that its first run did not"):
        for _ in range(3):
            program.guide(DATA[0][:2])


def test_a_program_run_needs_its_model_and_guide_again_naming_them(tmp_path):
    pyro_vae.train(config(tmp_path, "p", epochs=1), data=DATA, **program_parts(), **QUIET)
    with pytest.raises(CheckpointError, match="model=..."):
        pyro_vae.load_run(tmp_path / "p", data=DATA)
    run = pyro_vae.load_run(tmp_path / "p", data=DATA, **program_parts())
    with pytest.raises(ConfigError, match="sample\\(\\) reads the built-in VAE's decoder"):
        run.sample(4)


@pytest.mark.parametrize(
    "estimator, particles",
    [("trace", 1), ("meanfield", 1), ("score-baseline", 1), ("stl", 1), ("iwae", 3), ("dreg", 3),
     ("miwae", 2), ("piwae", 2), ("ciwae", 2), ("enum", 2)],
)  # fmt: skip
def test_every_estimator_trains_the_three_site_program(tmp_path, estimator, particles):
    settings = dict(epochs=1, estimator=estimator, num_particles=particles, eval_samples=5)
    run = pyro_vae.train(config(tmp_path, estimator, **settings), data=DATA, **program_parts(), **QUIET)
    assert math.isfinite(run.metrics[-1]["test_loss"]) and run.metrics[-1]["skipped_steps"] == 0
    assert weights_digest(run.vae) != weights_digest(
        Program(**program_parts(), config=ModelConfig(x_dim=PIXELS)).find_parameters((DATA[0][:2],))
    )


CHAIN = dict(a=0.8, c=-0.6, b=1.5, s2=0.7, s3=0.5, sx=0.4)  # z1 -> z2 -> z3 -> x, each linear-Gaussian


def chain_joint_covariance() -> torch.Tensor:
    """Cov of (z1, z2, z3, x) for z1 ~ N(0, 1), z2 = a z1 + s2 e2, z3 = c z2 + s3 e3, x = b z3 + sx ex."""
    p = CHAIN
    loadings = torch.tensor(
        [[1.0, 0, 0, 0], [p["a"], p["s2"], 0, 0], [p["a"] * p["c"], p["c"] * p["s2"], p["s3"], 0],
         [p["b"] * p["a"] * p["c"], p["b"] * p["c"] * p["s2"], p["b"] * p["s3"], p["sx"]]],
        dtype=torch.float64,
    )  # fmt: skip
    return loadings @ loadings.T


def exact_conditional(covariance: torch.Tensor, target: int, given: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """p(v_target | v_given) = N(coefficients . v_given, scale^2) of a zero-mean Gaussian vector."""
    cross, inner = covariance[target, given], covariance[given][:, given]
    coefficients = torch.linalg.solve(inner, cross)
    return coefficients, (covariance[target, target] - cross @ coefficients).sqrt()


def chain_program(shift: float = 0.0) -> tuple:
    """The chain's model, and a guide q(z1|x) q(z2|z1, x) q(z3|z2, x) of linear-Gaussian conditionals (its
    parameters pyro.params) at the exact posterior's, each coefficient moved by `shift`."""
    p, covariance = CHAIN, chain_joint_covariance()
    exact = [exact_conditional(covariance, 0, [3]), exact_conditional(covariance, 1, [0, 3]),
             exact_conditional(covariance, 2, [1, 3])]  # fmt: skip

    def model(x):
        with pyro.plate("images", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(()), 1.0))
            z2 = pyro.sample("z2", dist.Normal(p["a"] * z1, p["s2"]))
            z3 = pyro.sample("z3", dist.Normal(p["c"] * z2, p["s3"]))
            pyro.sample("x", dist.Normal(p["b"] * z3.unsqueeze(-1), p["sx"]).to_event(1), obs=x)

    def guide(x):
        w = [pyro.param(f"w{k}", (coefficients + shift).clone()) for k, (coefficients, _) in enumerate(exact)]
        s = [pyro.param(f"s{k}", scale.clone(), constraint=constraints.positive) for k, (_, scale) in enumerate(exact)]
        with pyro.plate("images", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(w[0][0] * x[:, 0], s[0]))
            z2 = pyro.sample("z2", dist.Normal(w[1][0] * z1 + w[1][1] * x[:, 0], s[1]))
            pyro.sample("z3", dist.Normal(w[2][0] * z2 + w[2][1] * x[:, 0], s[2]))

    return model, guide


def chain_gradients(estimator: str, particles: int, shift: float, draws: int, seed: int = 11) -> torch.Tensor:
    """`draws` independent gradients (draws, guide parameters) of the estimator's loss on 4 fixed images."""
    x = torch.tensor([[0.3], [-1.2], [2.0], [0.0]], dtype=torch.float64)
    program = Program(*chain_program(shift), ModelConfig(x_dim=1)).discover((x,), estimator)
    loss = ELBOLoss(program, build_elbo(estimator, particles))
    parameters = list(program.parameters())
    pyro.set_rng_seed(seed)
    rows = [torch.cat([g.flatten() for g in torch.autograd.grad(loss(x, 1.0), parameters)]) for _ in range(draws)]
    return torch.stack(rows)


@pytest.mark.parametrize("estimator, particles", [("stl", 1), ("dreg", 4)])
def test_stl_and_dreg_have_no_guide_gradient_at_the_exact_posterior_of_a_linear_gaussian_chain(estimator, particles):
    gradients = chain_gradients(estimator, particles, shift=0.0, draws=20)
    reference = chain_gradients("trace" if estimator == "stl" else "iwae", particles, shift=0.0, draws=20)
    assert gradients.abs().max() < 1e-10  # every draw's, exactly zero up to rounding
    assert reference.abs().max() > 1e-3  # the estimator without the correction is not


@pytest.mark.parametrize("estimator, reference, particles", [("stl", "trace", 1), ("dreg", "iwae", 4)])
def test_stl_and_dreg_on_a_three_site_chain_have_the_mean_gradient_of_trace_and_iwae(estimator, reference, particles):
    """Away from the posterior: each gradient coordinate's mean over 1,000 draws equals the reference estimator's
    within 5 standard errors of the difference of two independent means."""
    ours = chain_gradients(estimator, particles, shift=0.3, draws=1000)
    theirs = chain_gradients(reference, particles, shift=0.3, draws=1000, seed=12)  # independent draws
    difference = ours.mean(0) - theirs.mean(0)
    standard_error = (ours.var(0) / ours.shape[0] + theirs.var(0) / theirs.shape[0]).sqrt()
    assert (difference.abs() < 5 * standard_error).all(), difference / standard_error
    assert (ours.mean(0).abs() > 5 * standard_error).any()  # the gradient is not zero here: the test can fail


def test_the_documented_mixture_prior_example_runs_and_the_page_shows_its_code(tmp_path):
    """docs/examples/mixture_prior.py at one epoch; every line of the page's program and training blocks is in it."""
    script, page = ROOT / "docs" / "examples" / "mixture_prior.py", (ROOT / "docs" / "own-program.md").read_text()
    source = script.read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    shown = [block for block in blocks if "class MixturePriorVAE" in block or "vae = MixturePriorVAE()" in block]
    assert len(shown) == 2 and all(line.strip() in source for block in shown for line in block.splitlines())
    done = subprocess.run(
        [sys.executable, str(script), "--epochs", "1", "--samples", "20", "--out", str(tmp_path / "mixture")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "log p(x)" in done.stdout and "loaded: the learned mixture weights" in done.stdout


LABELS = prototype_draws(96, 0)[1], prototype_draws(32, 1)[1]
LABELLED = (
    torch.utils.data.TensorDataset(DATA[0], torch.where(torch.arange(96) % 4 == 0, LABELS[0], -1)),  # 1 in 4 known
    torch.utils.data.TensorDataset(DATA[1], LABELS[1]),
)


class LabelledProgram(nn.Module):
    """z ~ N(0, I_2); y | z ~ Categorical(classifier(z)), observed where known (y >= 0, masked elsewhere);
    x | z ~ Bernoulli(decoder(z)); q(z|x, y) reads the label where known."""

    def __init__(self):
        super().__init__()
        self.classifier, self.decoder = nn.Linear(2, 3), nn.Linear(2, PIXELS)
        self.encoder = nn.Linear(PIXELS + 3, 4)

    def model(self, x, y):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            with pyro.poutine.mask(mask=y >= 0):
                pyro.sample("y", dist.Categorical(logits=self.classifier(z)), obs=y.clamp(min=0))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x, y):
        known = functional.one_hot(y.clamp(min=0), 3) * (y >= 0).unsqueeze(-1)
        with pyro.plate("images", x.shape[0]):
            loc, log_scale = self.encoder(torch.cat([x, known.to(x.dtype)], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def labelled_parts() -> dict:
    torch.manual_seed(0)
    program = LabelledProgram()
    return dict(model=program.model, guide=program.guide)


def test_a_program_of_images_and_labels_some_missing_trains_resumes_exactly_and_evaluates(tmp_path):
    straight = pyro_vae.train(config(tmp_path, "a"), data=LABELLED, **labelled_parts(), **QUIET)
    pyro_vae.train(config(tmp_path, "b", epochs=1), data=LABELLED, **labelled_parts(), **QUIET)
    resumed = pyro_vae.resume(tmp_path / "b", epochs=2, data=LABELLED, **labelled_parts(), **QUIET)
    assert weights_digest(straight.vae) == weights_digest(resumed.vae) and straight.vae.takes_labels
    loaded = pyro_vae.load_run(tmp_path / "a", data=LABELLED, **labelled_parts())
    evaluation = loaded.evaluate(samples=30, seed=2)
    assert evaluation.negative_elbo == pytest.approx(straight.metrics[-1]["test_loss"], rel=0.05)
    # the test labels are all known: log p(x, y) of a trained classifier stays above log p(x) - log 3 - slack
    assert math.isfinite(evaluation.log_likelihood.value)


@pytest.mark.parametrize(
    "parts, data, message",
    [
        (lambda: labelled_parts(), DATA, "the data has no labels"),
        (lambda: dict(model=LabelledProgram().model, guide=empty_guide), LABELLED, "your model takes (x, y) and your guide (x)"),
        (lambda: dict(model=lambda x, y, z: None, guide=empty_guide), LABELLED, "takes 3 arguments without defaults"),
    ],
)  # fmt: skip
def test_a_program_whose_inputs_do_not_fit_the_data_is_refused_in_one_line(tmp_path, parts, data, message):
    with pytest.raises(ConfigError) as caught:
        pyro_vae.train(config(tmp_path, "r", epochs=1), data=data, **parts(), **QUIET)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def chain_log_px(x: torch.Tensor) -> torch.Tensor:
    """The chain's closed form: x ~ N(0, Cov(x)), per image."""
    return dist.Normal(0.0, chain_joint_covariance()[3, 3].sqrt()).log_prob(x[:, 0])


def test_ais_over_a_programs_latent_sites_finds_the_chains_closed_form():
    """The three-site linear-Gaussian chain: AIS from its prior (200 steps, 16 chains) within 5 standard errors
    of the closed-form log p(x), and so is importance sampling from its exact posterior guide, exactly."""
    x = torch.linspace(-2.5, 2.5, 12, dtype=torch.float64).unsqueeze(-1)
    program = Program(*chain_program(), ModelConfig(x_dim=1)).discover((x,))
    truth = chain_log_px(x).mean().item()
    estimate = program_ais(program, x, Annealing(steps=200, chains=16, leapfrog=5, seed=0))
    assert abs(estimate.value - truth) < 5 * estimate.standard_error and 0.5 < estimate.acceptance < 1
    exact_guide = pyro_vae.log_likelihood(program, x, 10)
    assert exact_guide.value == pytest.approx(truth, abs=1e-10)  # log w = log p(x) for every draw


def test_ais_of_a_trained_program_is_no_looser_than_importance_sampling_from_its_guide(tmp_path):
    """Both estimates are stochastic lower bounds on log p(x); AIS (50 steps) is the tighter one where the guide
    is poor (4 epochs): above the ELBO, and not below importance sampling's 2,000 draws by 5 standard errors."""
    run = pyro_vae.train(config(tmp_path, "t", epochs=4), data=DATA, **program_parts(), **QUIET)
    estimate = run.ais(steps=50, chains=8, images=16)
    importance = run.evaluate(samples=2000, images=16).log_likelihood
    assert estimate.value > -run.evaluate(images=16).negative_elbo
    assert estimate.value > importance.value - 5 * math.hypot(estimate.standard_error, importance.standard_error)


def test_ais_refuses_a_program_with_a_discrete_latent_site_naming_it(tmp_path):
    program = Program(discrete_model, discrete_guide, ModelConfig(x_dim=PIXELS)).discover((DATA[0][:4],))
    with pytest.raises(ConfigError, match="site 'y' \\(Bernoulli\\) is not"):
        program_ais(program, DATA[0][:4], Annealing(steps=2, chains=2))


def test_a_program_reads_labels_only_when_its_second_argument_is_required():
    """model(x, y) with y required is given the labels; model(x, y=None), as Pyro's examples write a model that
    can also generate, is given the images alone (as the built-in VAE's model(x, kl_weight=1.0, rows=None))."""
    assert takes_labels(lambda x, y: None, lambda x, y: None)
    assert not takes_labels(lambda x, y=None: None, lambda x, y=None: None)
    assert not takes_labels(VAE(ModelConfig(hidden=(8,), z_dim=2)).model, VAE(ModelConfig(hidden=(8,), z_dim=2)).guide)
