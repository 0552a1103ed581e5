"""The training recipe's ingredients (issue: reach the literature): the paper's learning-rate schedule, the
decoder's output bias at the mean training image, Adam's settings, and log p(x) on a subset of the test
images for a quality curve."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyro_vae import TrainConfig, data, files, train
from pyro_vae.cli.train import main
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.distributed import SINGLE
from pyro_vae.errors import ConfigError
from pyro_vae.training.build import build_run
from pyro_vae.training.schedule import PAPER_EPOCHS

TINY = ModelConfig(hidden=(16,), z_dim=2)


def test_paper_schedule_is_the_papers_stages_at_its_own_length():
    """Burda et al.: stage i = 0..7 lasts 3^i epochs at 1e-3 * 10^(-i/7); 3,280 epochs in all."""
    config = TrainConfig(lr_schedule="paper", epochs=PAPER_EPOCHS)
    rates = [config.schedule(1).learning_rate(epoch) for epoch in range(PAPER_EPOCHS)]
    starts = [0]
    for i in range(8):
        stage = rates[starts[-1] : starts[-1] + 3**i]
        assert stage == pytest.approx([1e-3 * 10 ** (-i / 7)] * 3**i, rel=1e-12)
        starts.append(starts[-1] + 3**i)
    assert starts[-1] == PAPER_EPOCHS == 3280


def test_paper_schedule_stretches_to_the_runs_length():
    """Stretched to 328 epochs, each stage lasts a tenth of the paper's (rounded to whole epochs); the
    rate only falls, from lr to lr / 10."""
    config = TrainConfig(lr_schedule="paper", epochs=328, lr=2e-3)
    rates = [config.schedule(1).learning_rate(epoch) for epoch in range(328)]
    assert rates[0] == 2e-3 and rates[-1] == pytest.approx(2e-4)
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    # the last stage starts where the paper's first 1,093 epochs end: epoch 110 of 328 (110 * 10 >= 1093)
    assert sum(r == pytest.approx(2e-4) for r in rates) == 328 - 110


def test_geometric_schedule_is_unchanged():
    config = TrainConfig(lr=1e-3, lr_final=1e-4, epochs=11)
    assert config.schedule(1).learning_rate(0) == 1e-3 and config.schedule(1).learning_rate(10) == pytest.approx(1e-4)
    assert config.schedule(1).learning_rate(5) == pytest.approx(1e-3 * 10**-0.5)
    assert TrainConfig(epochs=5).schedule(1).learning_rate(4) == 1e-3


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(lr_schedule="cosine"), "lr_schedule must be one of geometric, paper"),
        (dict(lr_schedule="paper", lr_final=1e-4), "leave out lr_final"),
        (dict(adam_eps=0.0), "adam_eps must be a number in (0, 1)"),
        (dict(adam_beta1=1.0), "adam_beta1 must be a number in [0, 1)"),
        (dict(init_output_bias=True, model=ModelConfig(likelihood="gaussian")), "for likelihood bernoulli"),
        (dict(eval_images=0), "eval_images must be a whole number from 1 to"),
    ],
)
def test_bad_recipe_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainConfig(**settings)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_bias_starts_at_the_mean_training_images_logit(dtype):
    """sigmoid(b) = the mean image, clipped to [0.001, 0.999] where a pixel is (almost) always 0 or 1."""
    vae = VAE(ModelConfig(x_dim=4, hidden=(3,), z_dim=2)).to(dtype)
    images = torch.tensor([[0.0, 1.0, 0.5, 0.25], [0.0, 1.0, 0.1, 0.75]], dtype=dtype)
    vae.init_output_bias(images)
    assert torch.sigmoid(vae.decoder.head.bias).tolist() == pytest.approx([1e-3, 1 - 1e-3, 0.3, 0.5], rel=1e-5)
    assert torch.isfinite(vae.decoder.head.bias).all()


def test_a_run_starts_from_the_bias_and_adam_settings_it_asks_for(tmp_path):
    config = TrainConfig(
        model=TINY, epochs=1, init_output_bias=True, adam_beta1=0.99, adam_eps=1e-4, out=str(tmp_path / "run")
    )
    run = build_run(config, SINGLE, log=lambda line: None)
    mean = data.pixels(run.dataset.train).mean(0).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(run.vae.decoder.head.bias, torch.logit(mean))
    group = run.objective.optimizer.param_groups[0]
    assert group["betas"] == (0.99, 0.999) and group["eps"] == 1e-4
    run.folder.close()
    plain = build_run(TrainConfig(model=TINY, epochs=1, out=str(tmp_path / "plain")), SINGLE, log=lambda line: None)
    assert not torch.allclose(plain.vae.decoder.head.bias, run.vae.decoder.head.bias)  # off by default
    assert plain.objective.optimizer.param_groups[0]["eps"] == 1e-8
    plain.folder.close()


def test_log_likelihood_on_the_first_test_images_every_n_epochs(tmp_path):
    """The quality curve: log p(x) on the first N test images every --eval-every epochs, into metrics."""
    run = train(
        TrainConfig(
            model=TINY, epochs=2, eval_samples=8, eval_every=1, eval_images=30, threads=1, out=str(tmp_path / "run")
        ),
        progress=False,
        log=lambda line: None,
    )
    assert [m["eval_images"] for m in run.metrics] == [30, 30]
    assert all(m["eval_samples"] == 8 and math.isfinite(m["test_log_likelihood"]) for m in run.metrics)


def test_the_command_line_takes_the_recipe(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "--hidden",
                "16",
                "--z-dim",
                "2",
                "--epochs",
                "2",
                "--lr-schedule",
                "paper",
                "--adam-eps",
                "1e-4",
                "--adam-beta1",
                "0.95",
                "--init-output-bias",
                "--eval-samples",
                "4",
                "--eval-images",
                "10",
                "--no-progress",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert (config["lr_schedule"], config["adam_eps"], config["adam_beta1"], config["init_output_bias"]) == (
        "paper",
        1e-4,
        0.95,
        True,
    )
    metrics = files.read_jsonl(out / "metrics.jsonl")
    assert [m["lr"] for m in metrics] == pytest.approx([1e-3, 1e-4])  # 2 epochs: stage 0, then the last
    assert metrics[-1]["eval_images"] == 10
