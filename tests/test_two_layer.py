"""Two stochastic layers (z2 -> z1 -> x): Pyro's sites, the hand-derived log-weight against Pyro's Trace_ELBO on
the same noise, every estimator's value by hand and its gradient unbiased, log p(x) exact on a linear-Gaussian
chain, and the commands (train, resume, evaluate, sample) on it."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae.cli import evaluate, sample
from pyro_vae.cli.train import main
from pyro_vae.core import analytic, device_elbo
from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import likelihood
from pyro_vae.training.checkpoint import store

TWO = ModelConfig(x_dim=6, hidden=(8,), z_dim=3, stochastic_layers=2, z2_dim=2, hidden2=(5,), activation="tanh")


def two_layer(dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(seed)
    vae = VAE(TWO).to(dtype)
    return vae, torch.bernoulli(torch.full((5, 6), 0.4, dtype=dtype))


def noise_of(vae: VAE, x: torch.Tensor, guide_trace) -> torch.Tensor:
    """The standard-normal noise (particles, batch, d1 + d2) behind a guide trace's z1 and z2."""
    z1, z2 = (guide_trace.nodes[name]["value"].detach() for name in ("z1", "z2"))
    with torch.no_grad():
        loc1, scale1 = vae.q.loc_and_scale(x)
        loc2, scale2 = vae.top.q.loc_and_scale(z1)
    eps = torch.cat([(z1 - loc1) / scale1, (z2 - loc2) / scale2], -1)
    return eps if eps.dim() == 3 else eps.unsqueeze(0)


def drawn_noise(vae: VAE, elbo, x: torch.Tensor) -> torch.Tensor:
    _, guide_trace = next(elbo._get_traces(vae.model, vae.guide, (x, 1.0, None), {}))
    return noise_of(vae, x, guide_trace)


def test_the_sites_are_the_papers_two_layers():
    vae, x = two_layer()
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    assert [n for n, s in model.nodes.items() if s["type"] == "sample"] == ["data", "z2", "z1", "x"]
    assert [n for n, s in guide.nodes.items() if s["type"] == "sample"] == ["data", "z1", "z2"]
    assert model.nodes["z1"]["fn"].event_shape == (3,) and model.nodes["z2"]["fn"].event_shape == (2,)
    assert vae.z_dim == 5 and vae.kl_to_prior(x) is None
    assert device_elbo.closed_form_sites(model, guide) == {"z2"}  # z1's prior reads z2, drawn after z1 in q
    one = VAE(ModelConfig(x_dim=6, hidden=(8,), z_dim=3))
    guide = poutine.trace(one.guide).get_trace(x.float())
    assert device_elbo.closed_form_sites(
        poutine.trace(poutine.replay(one.model, guide)).get_trace(x.float()), guide
    ) == {"z"}


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_hand_derived_log_weight_is_pyros_trace_elbo_on_the_same_noise(dtype, rtol):
    """log w = log p(x|z1) + log p(z1|z2) + log N(z2) - log q(z1|x) - log q(z2|z1) (analytic, by hand) against
    Pyro's Trace_ELBO: the same value and the same gradients."""
    vae, x = two_layer(dtype)
    elbo = build_elbo("trace", 4)
    pyro.set_rng_seed(3)
    eps = drawn_noise(vae, elbo, x)
    by_hand = -analytic.log_importance_weights(vae, x, eps).mean()
    pyro.set_rng_seed(3)
    pyros = ELBOLoss(vae, elbo)(x, 1.0)
    params = list(vae.parameters())
    assert torch.allclose(pyros, by_hand, rtol=rtol, atol=0)
    for a, b in zip(torch.autograd.grad(pyros, params), torch.autograd.grad(by_hand, params)):
        assert torch.allclose(a, b, rtol=100 * rtol, atol=100 * rtol * b.abs().max().item())


def by_hand_value(name: str, vae: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    log_w = analytic.log_importance_weights(vae, x, eps)
    if name in ("iwae", "dreg"):
        return analytic.log_mean_exp(log_w).mean()
    if name == "meanfield":  # z2's KL in closed form given z1, z1's term by its draw
        z, _ = vae.sample_q(x, eps)
        z1, z2 = vae.top.split(z)
        loc1, scale1 = vae.q.loc_and_scale(x)
        kl2 = analytic.kl_diagonal_normal_standard_normal(*vae.top.q.loc_and_scale(z1))
        prior1 = analytic.diagonal_normal_log_prob(z1, *vae.top.prior.loc_and_scale(z2))
        terms = vae.log_likelihood(x, z) + prior1 - analytic.diagonal_normal_log_prob(z1, loc1, scale1) - kl2
        return terms.mean()
    return log_w.mean()


@pytest.mark.parametrize("name", ["trace", "meanfield", "iwae", "stl", "dreg", "miwae", "ciwae"])
def test_each_estimators_value_is_computed_by_hand_from_the_same_noise(name):
    vae, x = two_layer()
    elbo = build_elbo(name, 4, 1, ciwae_beta=1.0)  # ciwae at beta 1 is the mean of log w
    pyro.set_rng_seed(5)
    eps = drawn_noise(vae, elbo, x)
    pyro.set_rng_seed(5)
    loss = ELBOLoss(vae, elbo)(x, 1.0)
    expected = by_hand_value({"ciwae": "trace", "miwae": "iwae"}.get(name, name), vae, x, eps)
    assert torch.allclose(-loss, expected, rtol=1e-10)


def gradient_difference(vae, x, one, other, seed) -> torch.Tensor:
    """The two estimators' gradients (all parameters, flattened) on the same noise, their difference."""
    grads = []
    for elbo in (one, other):
        pyro.set_rng_seed(seed)
        loss = ELBOLoss(vae, elbo)(x, 1.0)
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(vae.parameters()))]))
    return grads[0] - grads[1]


def worst_z_score(differences: list[torch.Tensor]) -> float:
    """max over coordinates of |mean| / standard error of the per-draw differences."""
    d = torch.stack(differences)
    se = d.std(0) / math.sqrt(d.shape[0])
    keep = se > 1e-12  # coordinates where the two agree draw by draw have nothing to test
    return (d.mean(0)[keep].abs() / se[keep]).max().item()


@pytest.mark.parametrize("name, reference", [("meanfield", "trace"), ("stl", "trace"), ("dreg", "iwae")])
def test_gradients_are_unbiased_on_two_layers(name, reference):
    """On the same noise each estimator differs from its reference by terms of expectation zero (a KL in closed
    form for its draw, a score term): the mean difference of 150 draws' gradients within 5 standard errors."""
    vae, x = two_layer()
    k = 3 if reference == "iwae" else 1
    one, other = build_elbo(name, k), build_elbo(reference, k)
    differences = [gradient_difference(vae, x, one, other, seed) for seed in range(150)]
    assert worst_z_score(differences) < 5


def test_the_closed_form_kl_of_z1_given_its_own_draw_of_z2_would_be_biased():
    """The test above can fail: Pyro's TraceMeanField_ELBO takes z1's KL in closed form too (and warns that the
    sites' order differs); its mean gradient then differs from Trace_ELBO's by more than 7 standard errors."""
    vae, x = two_layer()
    naive = pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1)
    with pytest.warns(UserWarning, match="mean field"):
        differences = [gradient_difference(vae, x, naive, build_elbo("trace"), seed) for seed in range(150)]
    assert worst_z_score(differences) > 7


def linear_chain(exact: bool, dtype=torch.float64) -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """z2 ~ N(0, 1), z1 | z2 ~ N(c z2 + m, s^2), x | z1 ~ N(a z1 + b, sigma^2 I): a two-layer VAE whose networks
    are linear (no hidden layers), with its Gaussian likelihood made linear too, and q set to the exact posterior
    p(z1|x) p(z2|z1) (or shifted off it). Returns the VAE, three images and their exact log p(x)."""
    c, m, s, sigma = 1.5, 0.3, 0.7, 0.5
    a, b = torch.tensor([[1.0], [-2.0], [0.5]], dtype=dtype), torch.tensor([0.1, 0.2, -0.3], dtype=dtype)
    vae = LinearChain(
        ModelConfig(x_dim=3, hidden=(), z_dim=1, stochastic_layers=2, z2_dim=1, hidden2=(), likelihood="gaussian"),
        a,
        b,
        sigma,
    )
    vae = vae.to(dtype)
    tau2 = c**2 + s**2  # p(z1) = N(m, tau^2)
    v1 = 1 / (1 / tau2 + (a.T @ a).item() / sigma**2)  # p(z1|x) = N(v1 (a^T (x - b) / sigma^2 + m / tau^2), v1)
    layers = [
        (vae.q.encoder.head, v1 * a.T / sigma**2, v1 * (m / tau2 - (a.T @ b).item() / sigma**2), math.sqrt(v1)),
        (vae.top.q.encoder.head, c / tau2, -c * m / tau2, math.sqrt(s**2 / tau2)),  # p(z2|z1)
        (vae.top.prior.encoder.head, c, m, s),  # the model: never shifted
    ]
    with torch.no_grad():
        for index, (head, weight, bias, scale) in enumerate(layers):
            head.weight.zero_()
            head.weight[0] = torch.as_tensor(weight, dtype=dtype).flatten()
            shift = 0.0 if exact or index == 2 else 0.4
            head.bias.copy_(torch.tensor([bias + shift, math.log(scale)], dtype=dtype))
    x = torch.tensor([[0.5, -1.0, 0.2], [2.0, 1.0, 0.0], [-1.0, 3.0, 0.7]], dtype=dtype)
    covariance = tau2 * a @ a.T + sigma**2 * torch.eye(3, dtype=dtype)
    exact_log_px = torch.distributions.MultivariateNormal(a.flatten() * m + b, covariance).log_prob(x)
    return vae, x, exact_log_px


class LinearChain(VAE):
    """A two-layer VAE with p(x|z1) = N(a z1 + b, sigma^2 I), for Pyro's model and the hand-derived forms alike."""

    def __init__(self, config: ModelConfig, a: torch.Tensor, b: torch.Tensor, sigma: float):
        super().__init__(config)
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.noise = sigma

    def likelihood(self, z: torch.Tensor):
        return pyro.distributions.Normal(z[..., :1] @ self.a.T + self.b, self.noise).to_event(1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return analytic.gaussian_log_likelihood(x, z[..., :1] @ self.a.T + self.b, self.noise)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_px_on_a_linear_gaussian_chain_is_exact_at_the_posterior_and_within_5_se_off_it(dtype):
    vae, x, truth = linear_chain(exact=True, dtype=dtype)
    at_posterior = likelihood.log_likelihood(vae, x, num_samples=100, seed=0)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    assert torch.allclose(at_posterior.per_image, truth.double(), atol=tolerance, rtol=0)  # every log w is log p(x)
    vae, x, truth = linear_chain(exact=False, dtype=dtype)
    off = likelihood.log_likelihood(vae, x, num_samples=20_000, seed=1)
    assert off.per_image_variance.min() > 0  # off the posterior the weights vary
    assert abs(off.value - truth.double().mean().item()) < 5 * off.standard_error


@pytest.mark.parametrize("name", ["stl", "dreg"])
def test_stl_and_dreg_encoder_gradients_vanish_at_the_exact_two_layer_posterior(name):
    vae, x, _ = linear_chain(exact=True)
    loss = ELBOLoss(vae, build_elbo(name, 4))(x, 1.0)
    assert max(g.abs().max().item() for g in torch.autograd.grad(loss, vae.encoder_parameters())) < 1e-12


def test_prior_samples_run_through_both_layers():
    vae, _ = two_layer()
    eps = torch.randn(4, 5, dtype=torch.float64)
    z = vae.prior_from_noise(eps)
    assert torch.equal(z[:, 3:], eps[:, 3:])  # z2 is the noise itself
    loc, scale = vae.top.prior.loc_and_scale(eps[:, 3:])
    assert torch.allclose(z[:, :3], loc + scale * eps[:, :3])


@pytest.mark.parametrize("guide", ["local", "delta"])
def test_two_layers_need_a_density_for_z1(guide):
    with pytest.raises(ConfigError, match="needs a density q\\(z1\\|x\\)"):
        ModelConfig(stochastic_layers=2, guide=guide)


def test_two_layers_train_resume_exactly_evaluate_and_sample_from_the_command_line(tmp_path, capsys):
    args = ["--stochastic-layers", "2", "--z-dim", "4", "--z2-dim", "2", "--hidden", "16", "--hidden2", "8"]
    args += ["--no-progress", "--threads", "1", "--batch-size", "500", "--estimator", "meanfield"]
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert main(["--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress"]) == 0
    assert main([*args, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    resumed, straight = (store.load(tmp_path / d / "checkpoint.pt").model_state for d in ("run", "straight"))
    assert any(key.startswith("top.") for key in straight)
    assert all(torch.equal(resumed[key], value) for key, value in straight.items())
    capsys.readouterr()
    assert (
        evaluate.main(
            [str(tmp_path / "run"), "--samples", "50", "--images", "20", "--prior", "--ais", "5", "--chains", "2"]
        )
        == 0
    )
    assert "log p(x)" in capsys.readouterr().out
    assert sample.main([str(tmp_path / "run"), "--out", str(tmp_path / "pictures")]) == 0
    assert any((tmp_path / "pictures").iterdir())
