"""Exact densities everywhere: the likelihoods at large logits (against 50-digit arithmetic), Pyro's loss
against the hand-derived ELBO where torch's continuous Bernoulli is off, a trained model, and every
closed form broadcasting over batch shapes of different ranks in both directions."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from conftest import rtol_for
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.cli.train import main
from pyro_vae.core import analytic
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.training.trained_run import load_run

mpmath.mp.dps = 50
LOGITS = [-80.0, -50.0, -39.9, -25.0, -20.5, -12.0, -0.3, 0.0, 1e-3, 0.7, 12.0, 20.5, 25.0, 30.0, 39.9, 50.0, 80.0]


def exact_bernoulli(x: float, l: float) -> float:
    """log sigmoid(l)^x sigmoid(-l)^(1-x), 50 digits."""
    l = mpmath.mpf(l)
    return float(-x * mpmath.log1p(mpmath.exp(-l)) - (1 - x) * mpmath.log1p(mpmath.exp(l)))


def exact_continuous_bernoulli(x: float, l: float) -> float:
    """log C(l) + x l - log(1 + e^l), C(l) = l / tanh(l / 2) (2 at l = 0), 50 digits."""
    l = mpmath.mpf(l)
    log_c = mpmath.log(2) if l == 0 else mpmath.log(l / mpmath.tanh(l / 2))
    return float(log_c + x * l - mpmath.log1p(mpmath.exp(l)))


def tolerance(dtype: torch.dtype, values: torch.Tensor) -> torch.Tensor:
    """A few units in the last place of each value (and of 1): the precision of the dtype, nothing looser."""
    return 8 * torch.finfo(dtype).eps * values.abs().clamp(min=1)


@pytest.mark.parametrize("name", ["bernoulli", "continuous-bernoulli"])
def test_log_likelihoods_are_exact_per_pixel_at_any_logit(device, dtype, name):
    """Including logits in (20, 40], where a softplus that returns l itself drops about 2e-9 in float64."""
    xs = [0.0, 1.0] if name == "bernoulli" else [0.0, 0.3, 1.0]
    pairs = [(x, l) for x in xs for l in LOGITS]
    x = torch.tensor([p[0] for p in pairs], dtype=dtype, device=device)
    logits = torch.tensor([p[1] for p in pairs], dtype=dtype, device=device)
    exact_fn = exact_bernoulli if name == "bernoulli" else exact_continuous_bernoulli
    exact = torch.tensor(
        [exact_fn(float(a), float(b)) for a, b in zip(x.tolist(), logits.tolist())], dtype=torch.float64
    )
    log_likelihood = (
        analytic.bernoulli_log_likelihood if name == "bernoulli" else analytic.continuous_bernoulli_log_likelihood
    )
    got = log_likelihood(x.unsqueeze(-1), logits.unsqueeze(-1)).double().cpu()  # one pixel per row
    assert ((got - exact).abs() <= tolerance(dtype, exact)).all(), (got - exact).abs().max()


def large_logit_vae(device, dtype, bias: float) -> VAE:
    torch.manual_seed(0)
    vae = VAE(ModelConfig(x_dim=20, hidden=(16,), z_dim=3, likelihood="continuous-bernoulli")).to(device, dtype)
    with torch.no_grad():
        vae.decoder.head.bias.fill_(bias)  # every logit near `bias`: where torch's normalizer is clamped
    return vae


@pytest.mark.parametrize("bias", [-40.0, 15.0, 30.0])
def test_pyro_continuous_bernoulli_loss_equals_the_hand_derived_elbo_at_large_logits(device, dtype, bias):
    vae = large_logit_vae(device, dtype, bias)
    x = torch.rand(8, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device, dtype)
    trace = poutine.trace(vae.guide).get_trace(x)
    loc, scale = vae.q.encoder(x)
    eps = ((trace.nodes["z"]["value"] - loc) / scale).detach().unsqueeze(0)
    replayed = poutine.replay(vae.guide, trace=trace)
    with torch.no_grad():
        analytic_kl = -analytic.elbo_analytic_kl(vae, x, eps).mean().item()
        monte_carlo = -analytic.elbo_monte_carlo(vae, x, eps).mean().item()
    assert TraceMeanField_ELBO().loss(vae.model, replayed, x) == pytest.approx(analytic_kl, rel=rtol_for(dtype))
    assert Trace_ELBO().loss(vae.model, replayed, x) == pytest.approx(monte_carlo, rel=rtol_for(dtype))


def test_the_continuous_bernoulli_gradient_does_not_vanish_at_large_logits():
    """d log C / dl = 1/l - 1/sinh(l): at l = 30 about 1/30, where torch's clamped normalizer gives 0."""
    logits = torch.tensor([30.0, -30.0], dtype=torch.float64, requires_grad=True)
    analytic.continuous_bernoulli_log_normalizer(logits).sum().backward()
    expected = [1 / l - 1 / math.sinh(l) for l in (30.0, -30.0)]
    torch.testing.assert_close(logits.grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


def test_a_trained_continuous_bernoulli_model_scores_one_density(tmp_path):
    """After training (logits beyond 12 reached), Pyro's loss on the x site (what training minimizes) and
    the hand-derived ELBO (what the test loss reports) agree on the same z to float32 precision."""
    out = tmp_path / "run"
    assert (
        main(
            [
                "--likelihood",
                "continuous-bernoulli",
                "--hidden",
                "64",
                "--z-dim",
                "4",
                "--epochs",
                "3",
                "--no-progress",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    run = load_run(out)
    x = run.test_images()[::50]
    vae = run.vae
    trace = poutine.trace(vae.guide).get_trace(x)
    loc, scale = vae.q.encoder(x)
    eps = ((trace.nodes["z"]["value"] - loc) / scale).detach().unsqueeze(0)
    with torch.no_grad():
        assert vae.decoder(trace.nodes["z"]["value"]).abs().max() > 12
        hand = -analytic.elbo_analytic_kl(vae, x, eps).mean().item()
    pyro_loss = TraceMeanField_ELBO().loss(vae.model, poutine.replay(vae.guide, trace=trace), x)
    assert pyro_loss == pytest.approx(hand, rel=rtol_for(torch.float32))


def broadcast_cases() -> list:
    """(function, arguments, which argument gets the extra batch dimensions): each function is called with
    one argument of batch shape (5, 2) and the others of batch shape (2,), and the other way round."""
    g = torch.Generator().manual_seed(3)
    d = 3

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def tril(batch):
        a = rand(*batch, d, d)
        return torch.linalg.cholesky(a @ a.mT + d * torch.eye(d, dtype=torch.float64))

    mean_like = lambda batch: rand(*batch, d)  # noqa: E731
    positive = lambda batch: rand(*batch, d).exp()  # noqa: E731
    unit = lambda batch: torch.rand(*batch, d, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        ("reparameterize", analytic.reparameterize, [mean_like, positive, mean_like]),
        ("diagonal_normal_log_prob", analytic.diagonal_normal_log_prob, [mean_like, mean_like, positive]),
        ("kl_diagonal_normal_standard_normal", analytic.kl_diagonal_normal_standard_normal, [mean_like, positive]),
        ("kl_normal_standard_normal", analytic.kl_normal_standard_normal, [mean_like, tril]),
        ("kl_normal_normal", analytic.kl_normal_normal, [mean_like, tril, mean_like, tril]),
        ("bernoulli_log_likelihood", analytic.bernoulli_log_likelihood, [unit, mean_like]),
        ("continuous_bernoulli_log_likelihood", analytic.continuous_bernoulli_log_likelihood, [unit, mean_like]),
        ("gaussian_log_likelihood", lambda x, m: analytic.gaussian_log_likelihood(x, m, 0.3), [unit, mean_like]),
    ]


@pytest.mark.parametrize("case", broadcast_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("wide", ["first", "last", "middle"])
def test_every_closed_form_broadcasts_over_batch_shapes_of_any_rank(case, wide):
    """f(a with batch (5, 2), b with batch (2,)) equals f of both expanded to (5, 2), for each argument in
    turn; `kl_normal_normal(torch.randn(5, 3), torch.eye(3), torch.randn(3), torch.eye(3))` among them."""
    _, function, makers = case
    position = {"first": 0, "last": len(makers) - 1, "middle": len(makers) // 2}[wide]
    arguments = [make((5, 2) if i == position else (2,)) for i, make in enumerate(makers)]
    expanded = []
    for argument, make in zip(arguments, makers):
        event = 2 if make.__name__ == "tril" else 1
        expanded.append(argument.expand(5, 2, *argument.shape[argument.dim() - event :]))
    torch.testing.assert_close(function(*arguments), function(*expanded), rtol=1e-12, atol=1e-12)
    assert function(*arguments).shape[:2] == (5, 2)


def test_kl_normal_normal_broadcasts_means_over_unbatched_factors():
    """The example of the report: means with more batch dimensions than the Cholesky factors."""
    loc_q, loc_p = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    got = analytic.kl_normal_normal(loc_q, eye, loc_p, eye)
    torch.testing.assert_close(got, 0.5 * (loc_q - loc_p).pow(2).sum(-1), rtol=1e-12, atol=1e-12)
