"""The estimator comparison: its statistics against direct formulas, and the script end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from pyro_vae.experiments import compare

ROOT = Path(__file__).resolve().parents[1]


def test_gradient_statistics_equal_direct_formulas():
    """Row 0 (each draw once) gives tr Cov = sum_j unbiased Var[g_j] and the bias-corrected SNR; a
    resample with multiplicities equals the direct formulas on the repeated rows."""
    g = torch.randn(30, 7, dtype=torch.float64) * torch.arange(1, 8) + 3.0
    counts = compare.resample_counts(30, 50, seed=0)
    stats = compare.gradient_statistics(g, counts)
    variance = g.var(0).sum()
    signal = g.mean(0).pow(2).sum() - variance / 30
    torch.testing.assert_close(stats["variance"][0], variance)
    torch.testing.assert_close(stats["snr"][0], (signal / variance).sqrt())
    repeated = g.repeat_interleave(counts[7].long(), dim=0)
    torch.testing.assert_close(stats["variance"][7], repeated.var(0).sum())


def test_loss_statistics_scale_the_batch_mean_to_one_image():
    losses = torch.randn(40, dtype=torch.float64) * 2 + 5
    stats = compare.loss_statistics(losses, compare.resample_counts(40, 10, seed=1), batch=25)
    torch.testing.assert_close(stats["loss"][0], losses.mean())
    torch.testing.assert_close(stats["loss_std"][0], (25 * losses.var()).sqrt())


def test_decoder_gradients_agree_and_encoder_variance_drops_with_the_exact_kl():
    """Same noise: the decoder gradient of trace and meanfield is the same (theta never meets the KL),
    and at initialization the exact KL lowers the encoder-gradient variance."""
    config = compare.CompareConfig(draws=10)
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(16, 784))
    vae = compare.new_vae(config, 784, seed=0)
    trace = compare.gradient_draws(vae, "trace", x, 10, seed=3)
    meanfield = compare.gradient_draws(vae, "meanfield", x, 10, seed=3)
    torch.testing.assert_close(trace["decoder"], meanfield["decoder"])
    assert trace["encoder"].var(0).sum() > meanfield["encoder"].var(0).sum()


def test_script_writes_every_output(tmp_path):
    out = tmp_path / "cmp"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/compare_estimators.py",
            "--steps",
            "6",
            "--early-step",
            "2",
            "--eval-every",
            "3",
            "--draws",
            "4",
            "--seeds",
            "2",
            "--timed",
            "trace",
            "iwae",
            "--iwae-particles",
            "2",
            "--out",
            str(out),
            "--estimators",
            "trace",
            "score-baseline",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("results.json", "variance.csv", "curves.csv", "timing.csv", "report.md", "variance.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert [r["snapshot"] for r in results["ratios"]] == ["init", "step 2", "step 6"]
    assert {p["seed"] for p in results["curves"]} == {0, 1}
    assert "| iwae | 2 |" in result.stdout and "| trace / score-baseline |" in result.stdout


def test_script_refuses_an_early_step_after_the_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "scripts/compare_estimators.py",
            "--steps",
            "5",
            "--early-step",
            "9",
            "--out",
            str(tmp_path / "x"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--early-step" in result.stderr


def test_a_full_disk_at_the_end_loses_no_measurement(tmp_path, capsys, monkeypatch):
    """The results cannot be written (ENOSPC): one line on stderr, exit 2, and the report still on stdout."""
    import errno

    from pyro_vae.cli import compare as compare_cli

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(compare_cli.files, "write_json", full)
    args = ["--steps", "4", "--early-step", "2", "--eval-every", "2", "--draws", "3", "--seeds", "1"]
    args += ["--timed", "trace", "--estimators", "trace", "--threads", "1", "--out", str(tmp_path / "cmp")]
    assert compare_cli.main(args) == 2
    captured = capsys.readouterr()
    assert "No space left on device; the report follows on stdout" in captured.err and "Traceback" not in captured.err
    assert "Command: `python scripts/compare_estimators.py" in captured.out
