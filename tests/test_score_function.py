"""The score-function estimators (`score`, `score-baseline`): the gradient of the same ELBO as the
pathwise `trace`, without the reparameterization trick; they train and resume from the command line."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_vae import files
from pyro_vae.cli.train import main
from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.experiments import compare

SMALL = ModelConfig(x_dim=6, hidden=(8,), z_dim=2)


def gradient_moments(
    vae: VAE, estimator: str, x: torch.Tensor, draws: int, particles: int, seed: int
) -> tuple[torch.Tensor, ...]:
    """Mean and standard error of each coordinate of the gradient (encoder, then decoder) over `draws`
    independent draws (`compare.gradient_draws`), each the average of `particles` vectorized samples; and
    the total variance."""
    sample = compare.gradient_draws(vae, estimator, x, draws, seed, num_particles=particles)
    grads = torch.cat([sample["encoder"], sample["decoder"]], dim=1)
    return grads.mean(0), grads.std(0) / math.sqrt(draws), grads.var(0).sum()


@pytest.fixture(scope="module")
def moments() -> dict[str, tuple[torch.Tensor, ...]]:
    """Gradient moments of three estimators on one fixed small float64 VAE and batch of 5 images."""
    torch.manual_seed(0)
    vae = VAE(SMALL).double()
    x = torch.bernoulli(torch.full((5, 6), 0.4, dtype=torch.float64))
    out = {}
    for seed, estimator in enumerate(("trace", "score", "score-baseline")):
        out[estimator] = gradient_moments(vae, estimator, x, draws=300, particles=20, seed=seed)
    return out


@pytest.mark.parametrize("estimator", ["score", "score-baseline"])
def test_score_function_and_pathwise_gradients_have_the_same_mean(moments, estimator):
    """Every coordinate of the mean gradient agrees with trace's within 5 standard errors of the
    difference (about 100 coordinates: a false alarm has odds of about 1 in 20,000); the weights of pixels
    that are 0 in every image have a gradient of exactly 0 under both."""
    mean, se, _ = moments[estimator]
    reference_mean, reference_se, _ = moments["trace"]
    se_difference = (se.pow(2) + reference_se.pow(2)).sqrt()
    random = se_difference > 0
    assert torch.equal(mean[~random], reference_mean[~random]) and random.sum() > 50
    assert ((mean - reference_mean)[random] / se_difference[random]).abs().max() < 5


@pytest.mark.parametrize("estimator", ["score", "score-baseline"])
def test_the_comparison_would_catch_a_missing_score_term(moments, estimator):
    """An encoder gradient without the score term has mean about 0; the test above would reject it, since
    the true encoder gradient stands well over 5 standard errors of the difference from 0."""
    _, se, _ = moments[estimator]
    reference_mean, reference_se, _ = moments["trace"]
    encoder = sum(p.numel() for p in VAE(SMALL).q.parameters())
    se_difference = (se.pow(2) + reference_se.pow(2)).sqrt()[:encoder]
    random = se_difference > 0
    assert (reference_mean[:encoder][random] / se_difference[random]).abs().max() > 10


def test_the_baseline_lowers_the_variance_and_both_exceed_the_pathwise(moments):
    variance = {name: value[2].item() for name, value in moments.items()}
    assert variance["trace"] < variance["score-baseline"] < variance["score"]


def test_z_carries_no_gradient_to_the_encoder_under_the_score_function():
    """With the score function, z is sampled detached: the decoder's input has no path to the encoder."""
    torch.manual_seed(0)
    vae = VAE(SMALL)
    seen = []
    handle = vae.decoder.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].requires_grad))
    ELBOLoss(vae, build_elbo("score", 1))(torch.ones(3, 6), 1.0)
    ELBOLoss(vae, build_elbo("trace", 1))(torch.ones(3, 6), 1.0)
    handle.remove()
    assert seen == [False, True]


def test_a_batch_of_one_image_trains_without_a_baseline():
    torch.manual_seed(0)
    vae = VAE(SMALL)
    value = ELBOLoss(vae, build_elbo("score-baseline", 1))(torch.ones(1, 6), 1.0)
    value.backward()
    assert torch.isfinite(value) and all(torch.isfinite(p.grad).all() for p in vae.q.parameters())


def test_the_baseline_estimator_trains_and_resumes_exactly_from_the_command_line(tmp_path):
    """Two epochs straight equal one epoch and a resume (the baseline keeps no state between steps)."""
    common = [
        "--hidden",
        "32",
        "--z-dim",
        "2",
        "--estimator",
        "score-baseline",
        "--no-progress",
        "--threads",
        "1",
        "--batch-size",
        "300",
    ]  # 4000 images: a smaller last batch every epoch
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*common, "--epochs", "2", "--out", str(straight)]) == 0
    assert main([*common, "--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["--resume", str(resumed), "--epochs", "2", "--no-progress"]) == 0
    records = [files.read_jsonl(run / "metrics.jsonl") for run in (straight, resumed)]
    assert [r["test_loss"] for r in records[0]] == [r["test_loss"] for r in records[1]]
    assert records[0][1]["test_loss"] < records[0][0]["test_loss"]
