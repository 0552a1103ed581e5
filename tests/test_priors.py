"""Learned priors (`--prior mog|vamp`): the mixture's density by hand against torch's `MixtureSameFamily` and
Pyro's site, its draws from noise against its CDF, the importance weights read from traces against the hand
path, exact resume, and the refusals."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from test_program_likelihood import traces_at

import pyro_vae
from pyro_vae.core import analytic, priors
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation.program_likelihood import trace_log_weights
from pyro_vae.training.run import weights_digest

SMALL = dict(hidden=(32,), z_dim=3, prior_components=7)


def mixture(k: int = 5, d: int = 3, dtype=torch.float64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    log_weights = torch.randn(k, generator=g, dtype=dtype).log_softmax(0)
    return (
        log_weights,
        2 * torch.randn(k, d, generator=g, dtype=dtype),
        torch.rand(k, d, generator=g, dtype=dtype) + 0.2,
    )


def torch_mixture(log_weights, loc, scale) -> torch.distributions.Distribution:
    components = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=log_weights), components)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_the_mixture_density_by_hand_is_torchs(dtype, tolerance):
    """Including points far in the tails, where one component dominates by hundreds of nats."""
    log_weights, loc, scale = mixture(dtype=dtype)
    z = torch.cat([torch.randn(4, 6, 3, dtype=dtype), 8 * torch.randn(1, 6, 3, dtype=dtype)])
    expected = torch_mixture(log_weights, loc, scale).log_prob(z)
    assert torch.allclose(analytic.mixture_log_prob(z, log_weights, loc, scale), expected, rtol=tolerance, atol=0)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_the_models_prior_site_is_the_hand_derived_mixture(prior):
    """The z site's log-density in Pyro's trace of the model equals `vae.log_prior` and torch's mixture at the
    components the prior gives (float64)."""
    torch.manual_seed(1)
    vae = VAE(ModelConfig(prior=prior, **SMALL)).double()
    x = torch.bernoulli(torch.rand(5, 784, dtype=torch.float64))
    trace = poutine.trace(vae.model).get_trace(x)
    trace.compute_log_prob()
    z = trace.nodes["z"]["value"]
    site = trace.nodes["z"]["unscaled_log_prob"]
    assert torch.allclose(site, vae.log_prior(z), rtol=0, atol=1e-10)
    assert torch.allclose(site, torch_mixture(*vae.prior.components(vae.q)).log_prob(z), rtol=0, atol=1e-10)


def test_mixture_draws_from_noise_follow_the_mixture():
    """200,000 draws of a 1-D, 3-component mixture from standard-normal noise: the empirical CDF at 9 points,
    across every component, within 5 binomial standard errors of the exact CDF."""
    log_weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64).log()
    loc, scale = (
        torch.tensor([[-3.0], [0.0], [2.5]], dtype=torch.float64),
        torch.tensor([[0.5], [1.0], [0.3]], dtype=torch.float64),
    )
    n = 200_000
    z = priors.mixture_from_noise(
        torch.randn(n, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64), log_weights, loc, scale
    )
    points = torch.linspace(-4, 3.5, 9, dtype=torch.float64)
    exact = (log_weights.exp() * torch.distributions.Normal(loc[:, 0], scale[:, 0]).cdf(points.unsqueeze(-1))).sum(-1)
    empirical = (z[:, 0].unsqueeze(-1) <= points).double().mean(0)
    assert ((empirical - exact).abs() < 5 * (exact * (1 - exact) / n).sqrt().clamp(min=1e-4)).all()


@pytest.mark.parametrize("prior, layers", [("mog", 1), ("vamp", 1), ("mog", 2), ("vamp", 2)])
def test_the_importance_weights_read_from_traces_use_the_learned_prior(prior, layers):
    """log p(x, z) - log q(z|x) from Pyro's traces equals `analytic.log_importance_weights` (which reads
    `vae.log_prior`) to 1e-10 in float64, and differs from the N(0, I) prior's; with two layers the learned
    prior is z2's."""
    torch.manual_seed(2)
    two = dict(stochastic_layers=2, z2_dim=2, hidden2=(8,)) if layers == 2 else {}
    vae = VAE(ModelConfig(prior=prior, **SMALL, **two)).double()
    x = torch.bernoulli(torch.rand(4, 784, dtype=torch.float64))
    eps = torch.randn(3, 4, vae.z_dim, dtype=torch.float64)
    z, _ = vae.sample_q(x, eps)
    generic = trace_log_weights(*traces_at(vae, x, z), images=4)
    hand = analytic.log_importance_weights(vae, x, eps)
    assert torch.allclose(generic, hand, rtol=0, atol=1e-10)
    top = z[..., -vae.prior.components(vae.top_posterior)[1].shape[-1] :]
    assert not torch.allclose(vae.top_log_prior(top), analytic.standard_normal_log_prob(top), atol=1e-3)
    assert vae.kl_to_prior(x) is None  # no closed form against a mixture: the rate is estimated


def test_a_vampprior_run_resumes_exactly_and_its_samples_come_from_the_learned_prior(tmp_path):
    quiet = dict(progress=False, log=lambda line: None)
    config = pyro_vae.TrainConfig(model=ModelConfig(prior="vamp", **SMALL), epochs=2, eval_samples=10)
    straight = pyro_vae.train(config.__class__(**{**config.__dict__, "out": str(tmp_path / "a")}), **quiet)
    one = config.__class__(**{**config.__dict__, "epochs": 1, "out": str(tmp_path / "b")})
    pyro_vae.train(one, **quiet)
    resumed = pyro_vae.resume(tmp_path / "b", epochs=2, **quiet)
    assert weights_digest(straight.vae) == weights_digest(resumed.vae)
    assert math.isfinite(straight.metrics[-1]["test_log_likelihood"])
    pictures = straight.sample(8)
    assert pictures.shape == (8, 784) and bool(((pictures >= 0) & (pictures <= 1)).all())


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(prior="vamp", guide="flow"), "@guide flow is not that guide"),
        (dict(prior="gamma"), "prior"),
    ],
)
def test_a_prior_that_cannot_be_built_is_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError) as caught:
        ModelConfig(**settings)
    assert message.replace("@", "") in str(caught.value).replace("@", "") and "\n" not in str(caught.value)


def test_pyro_sees_no_parameter_of_the_prior_outside_the_module():
    pyro.clear_param_store()
    vae = VAE(ModelConfig(prior="mog", **SMALL))
    poutine.trace(vae.model).get_trace(torch.bernoulli(torch.rand(2, 784)))
    assert len(pyro.get_param_store()) == 0 and any(name.startswith("prior.") for name, _ in vae.named_parameters())


def test_two_layer_prior_draws_put_the_learned_prior_on_z2():
    """prior_from_noise with two layers: z2 is the mixture's draw from eps2, z1 ~ p(z1|z2) from eps1."""
    torch.manual_seed(4)
    vae = VAE(ModelConfig(prior="mog", stochastic_layers=2, z2_dim=2, hidden2=(8,), **SMALL)).double()
    eps = torch.randn(6, vae.z_dim, dtype=torch.float64)
    z = vae.prior_from_noise(eps)
    expected_z2 = priors.mixture_from_noise(eps[:, 3:], *vae.prior.components(vae.top_posterior))
    assert torch.allclose(z[:, 3:], expected_z2, rtol=0, atol=1e-12)
