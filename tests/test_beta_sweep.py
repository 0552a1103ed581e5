"""The beta sweep: rate and distortion from beta above 1 down to the autoencoder, its files, and its resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.experiments import beta_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = beta_sweep.SweepConfig(
    betas=(0.0, 1.0), model=ModelConfig(hidden=(32,), z_dim=2), epochs=2, samples=2, threads=1
)


def test_script_writes_numbers_and_figures_and_reads_finished_points_back(tmp_path):
    out = tmp_path / "sweep"
    command = [
        sys.executable,
        "scripts/beta_sweep.py",
        "--betas",
        "1",
        "--z-dim",
        "2",
        "--epochs",
        "1",
        "--samples",
        "2",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    for name in ("sweep.json", "sweep.csv", "rate_distortion.png", "images.png"):
        assert (out / name).stat().st_size > 0, name
    points = {p["name"]: p for p in json.loads((out / "sweep.json").read_text())["points"]}
    assert list(points) == ["beta-1", "autoencoder"]
    assert points["autoencoder"]["rate"] == "inf" and points["autoencoder"]["guide"] == "delta"
    assert points["beta-1"]["rate"] > 0
    for point in points.values():
        assert point["distortion"] > 0  # Bernoulli: -log p(x|z) of binary pixels is positive
    stamp = os.stat(out / "beta-1" / "checkpoint.pt").st_mtime_ns
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert os.stat(out / "beta-1" / "checkpoint.pt").st_mtime_ns == stamp  # read back, not trained again
    assert json.loads((out / "sweep.json").read_text())["points"] == list(points.values())


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("tiny-sweep")
    return out, beta_sweep.sweep(TINY, out, log=lambda line: None)


def test_a_point_folder_of_another_run_is_refused(tiny_sweep):
    out, _ = tiny_sweep
    with pytest.raises(ConfigError, match=r"cannot resume with settings that differ from the run's: lr \(run: "):
        beta_sweep.sweep(beta_sweep.SweepConfig(**{**TINY.__dict__, "lr": 0.01}), out, log=lambda line: None)


def test_the_autoencoders_distortion_is_its_reconstruction_error(tiny_sweep):
    """The point-mass guide's distortion is -log p(x|mu(x)) whatever the number of samples; a VAE's
    -ELBO is its distortion plus its rate."""
    out, (beta_0, beta_1, autoencoder) = tiny_sweep
    run = beta_sweep.train_point(TINY.training(0.0, "delta", out / "autoencoder"), log=lambda line: None)
    x = run.test_images()
    expected = -run.vae.log_likelihood(x, run.vae.location(x)).mean().item()
    assert autoencoder["distortion"] == pytest.approx(expected, rel=1e-5) and math.isinf(autoencoder["rate"])
    for point in (beta_0, beta_1):
        assert point["negative_elbo"] == pytest.approx(point["distortion"] + point["rate"])
    assert beta_0["objective"] == beta_0["distortion"] and beta_1["objective"] == beta_1["negative_elbo"]
    assert beta_0["rate"] > beta_1["rate"]  # without a price on it, the rate grows


@pytest.mark.parametrize(
    "values, message",
    [(dict(betas=(-1.0,)), "^betas must"), (dict(betas=()), "^betas must"), (dict(samples=0), "^samples must")],
)
def test_bad_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        beta_sweep.SweepConfig(**values)


def test_ctrl_c_stops_the_sweep_with_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "sweep"
    process = subprocess.Popen(
        [
            sys.executable,
            "scripts/beta_sweep.py",
            "--betas",
            "1",
            "--z-dim",
            "2",
            "--epochs",
            "1000",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "beta-1" / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "the same command resumes the sweep" in stderr
    assert "Traceback" not in stderr and (out / "beta-1" / "checkpoint.pt").exists()
