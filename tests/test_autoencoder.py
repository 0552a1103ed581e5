"""beta = 0 and the point-mass guide: `--likelihood gaussian --guide delta --beta 0` is a plain
autoencoder whose loss is sum_j (x_j - xhat_j)^2 / (2 sigma^2) + (D/2) log(2 pi sigma^2) per image."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch

from pyro_vae import files
from pyro_vae.cli.train import main
from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import likelihood as evaluate

AUTOENCODER = ModelConfig(x_dim=12, hidden=(16,), z_dim=3, likelihood="gaussian", guide="delta", sigma=0.3)


def mse_autoencoder_loss(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Written by hand: encode, decode, squared error; the Gaussian's constants added (sigma is the VAE's
    0.3, as stored: exp of log 0.3 in float32)."""
    sigma = vae.sigma.item()
    code = vae.q.head(vae.q.body(x))
    reconstruction = torch.sigmoid(vae.decoder(code))
    squared_error = (x - reconstruction).pow(2).sum(-1)
    return (squared_error / (2 * sigma**2) + x.shape[-1] / 2 * math.log(2 * math.pi * sigma**2)).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("estimator", ["trace", "meanfield"])
def test_delta_guide_at_beta_0_is_the_squared_error_autoencoder(dtype, estimator):
    torch.manual_seed(0)
    vae = VAE(AUTOENCODER).to(dtype)
    x = torch.rand(7, 12, dtype=dtype)
    loss = ELBOLoss(vae, build_elbo(estimator))(x, 0.0)
    grads = torch.autograd.grad(loss, list(vae.parameters()))
    expected = mse_autoencoder_loss(vae, x)
    expected_grads = torch.autograd.grad(expected, list(vae.parameters()))
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, expected, **tolerance)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, **tolerance)


def test_delta_guide_at_beta_1_adds_the_codes_negative_log_prior():
    """log q = 0 for the point mass (Pyro's Delta), so the KL term is -log p(mu(x)) = ||mu||^2/2 + d/2 log 2 pi."""
    torch.manual_seed(0)
    vae = VAE(AUTOENCODER)
    x = torch.rand(7, 12)
    code = vae.q.location(x)
    penalty = (code.pow(2).sum(-1) / 2 + 3 / 2 * math.log(2 * math.pi)).mean()
    loss = ELBOLoss(vae, build_elbo("trace"))(x, 1.0)
    torch.testing.assert_close(loss, mse_autoencoder_loss(vae, x) + penalty)
    torch.testing.assert_close(loss, evaluate.negative_elbo(vae, x) * torch.ones(()), check_dtype=False)


def test_beta_0_drops_exactly_the_kl_term_of_a_gaussian_guide():
    """Same noise (same seed): meanfield's loss at beta 1 minus at beta 0 is the closed-form KL, and trace
    at beta 0 is meanfield at beta 0, -E_q log p(x|z) from the same z."""
    torch.manual_seed(0)
    vae = VAE(ModelConfig(x_dim=12, hidden=(16,), z_dim=3)).double()
    x = torch.bernoulli(torch.full((7, 12), 0.3, dtype=torch.float64))
    losses = {}
    for estimator, beta in (("meanfield", 1.0), ("meanfield", 0.0), ("trace", 0.0)):
        pyro.set_rng_seed(5)
        losses[estimator, beta] = ELBOLoss(vae, build_elbo(estimator))(x, beta)
    torch.testing.assert_close(losses["meanfield", 1.0] - losses["meanfield", 0.0], vae.kl_to_prior(x).mean())
    torch.testing.assert_close(losses["trace", 0.0], losses["meanfield", 0.0])


def test_log_px_of_a_point_mass_guide_is_refused_but_the_prior_proposal_works():
    torch.manual_seed(0)
    vae = VAE(AUTOENCODER)
    x = torch.rand(4, 12)
    with pytest.raises(ConfigError, match="point mass"):
        evaluate.log_likelihood(vae, x, num_samples=10)
    assert torch.isfinite(evaluate.log_likelihood(vae, x, num_samples=10, proposal="prior").per_image).all()


def test_the_autoencoder_trains_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "ae"
    args = [
        "--likelihood",
        "gaussian",
        "--guide",
        "delta",
        "--beta",
        "0",
        "--hidden",
        "32",
        "--z-dim",
        "2",
        "--epochs",
        "2",
        "--no-progress",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    records = files.read_jsonl(out / "metrics.jsonl")
    assert records[1]["train_loss"] < records[0]["train_loss"]
    config = json.loads((out / "config.json").read_text())
    assert (config["beta"], config["model"]["guide"]) == (0.0, "delta")
    assert "no bound on log p(x)" in capsys.readouterr().err
