"""The benchmark scripts run end to end at a tiny budget and print their tables (numbers come from real runs
documented in docs/; here only that the tools work)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae import files
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs)


def test_throughput_steps(tmp_path):
    out = tmp_path / "t.json"
    result = run(
        [
            "benchmarks/throughput.py",
            "--batch-sizes",
            "16",
            "--steps",
            "2",
            "--repeats",
            "2",
            "--estimators",
            "trace",
            "jit-meanfield",
            "iwae",
            "--iwae-particles",
            "2",
            "--compile",
            "--compile-backend",
            "graph",  # the harness's contenders; inductor's kernels are tested in test_compiled.py
            "--json",
            str(out),
        ]
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {r["contender"] for r in rows} == {
        "plain PyTorch",
        "plain PyTorch iwae k=2",
        "plain PyTorch compiled",
        "plain PyTorch iwae k=2 compiled",
        "pyro trace",
        "pyro jit-meanfield",
        "pyro iwae k=2",
        "pyro trace compiled",  # jit-meanfield is compiled by TorchScript already, and not traced
        "pyro iwae k=2 compiled",
    }
    assert all(r["ms"] > 0 and r["ratio"] > 0 for r in rows)
    assert {r["contender"] for r in rows if "ratio_to_plain_compiled" in r} == {
        "pyro trace compiled",
        "pyro iwae k=2 compiled",
    }
    assert "| step | 16 | pyro trace |" in result.stdout


def test_throughput_epoch_and_eval_on_mnist(data_dir, tmp_path):
    result = run(
        [
            "benchmarks/throughput.py",
            "--batch-sizes",
            "16",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--estimators",
            "trace",
            "--epoch",
            "--epoch-repeats",
            "1",
            "--eval",
            "--eval-samples",
            "3",
            "--eval-images",
            "50",
            "--eval-repeats",
            "1",
            "--data-dir",
            str(data_dir),
            "--scratch",
            str(tmp_path / "scratch"),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "| mnist epoch | 256 | pyro trace |" in result.stdout
    assert "| log p(x) eval | 50 images x K=3 | pyro-vae evaluate |" in result.stdout


def test_peers_times_and_scores_each_contender_or_says_why_it_cannot():
    """NumPyro and pythae run where the peers extra is installed, and are skipped with the reason where not;
    each contender's weights are scored by log p(x)."""
    result = run(["benchmarks/peers.py", "--contenders", "pyro-vae eager", "pythae", "NumPyro", "--epochs", "2",
                  "--rounds", "1", "--samples", "3", "--images", "10"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"\| pyro-vae eager \| [\d.]+ \| [\d.na/]+ \| n/a \| -\d+\.\d\d ± \d+\.\d\d \|", result.stdout)
    for peer in ("NumPyro", "pythae"):
        assert (
            f"| {peer} | " in result.stdout or f"{peer}: skipped (ModuleNotFoundError: No module named" in result.stderr
        )


def test_peers_budget_trains_each_contender_the_epochs_its_timing_fits_then_scores_it():
    """--budget S: the epochs of the equal-time run are 1 + floor((S - t_1) / median t) of the timed round's
    epochs t (printed on stderr to 0.01 s, so the count is checked between its values at t +- 0.005, between
    which it can only fall), and the table gives them and their log p(x)."""
    result = run(["benchmarks/peers.py", "--contenders", "plain PyTorch", "--epochs", "3", "--rounds", "1",
                  "--samples", "3", "--images", "10", "--budget", "1"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    timed = re.search(r"round 1, plain PyTorch: ([\d.]+), ([\d.]+), ([\d.]+) s", result.stderr)
    printed = [float(value) for value in timed.groups()]
    budget_epochs = peer_module().budget_epochs
    fewest, most = (budget_epochs(1.0, [t + shift for t in printed]) for shift in (0.005, -0.005))
    epochs = int(re.search(r"1 s, plain PyTorch: (\d+) epochs", result.stderr).group(1))
    assert fewest <= epochs <= most
    assert re.search(
        rf"\| plain PyTorch \| [\d.]+ \| n/a \| n/a \| -[\d.]+ ± [\d.]+ \| {epochs} \| -[\d.]+ ± [\d.]+ \|",
        result.stdout,
    )


def test_peers_gemm_floor_takes_its_turn_and_each_contender_is_given_its_ratio_to_it():
    """The floor trains nothing and is not scored; the table divides each median epoch by the floor's."""
    result = run(["benchmarks/peers.py", "--contenders", "plain PyTorch", "GEMM floor", "--epochs", "2",
                  "--rounds", "1", "--samples", "3", "--images", "10"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    plain = re.search(r"\| plain PyTorch \| ([\d.]+) \| n/a \| ([\d.]+) \| -[\d.]+ ± [\d.]+ \|", result.stdout)
    floor = re.search(r"\| GEMM floor \| ([\d.]+) \| n/a \| 1\.00 \|  \|", result.stdout)
    assert plain and floor, result.stdout
    seconds, floor_seconds = float(plain.group(1)), float(floor.group(1))  # each rounded to 0.01 s, so the
    rounding = 0.005 / floor_seconds + seconds * 0.005 / floor_seconds**2 + 0.005  # ratio is known to within this
    assert abs(float(plain.group(2)) - seconds / floor_seconds) <= rounding


def test_peers_gemm_floor_multiplies_every_batch_of_an_epoch():
    """An epoch of the default 4,000 digits is 15 batches of 256 and one of 160: the floor times `epochs` of them."""
    seconds, weights = peer_module().floor_epochs(None, 2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds) and weights == {}


def test_peers_budget_epochs_counts_the_first_epoch_then_the_median_pace():
    budget_epochs = peer_module().budget_epochs
    assert budget_epochs(10.0, [4.0, 2.0, 3.0, 2.0]) == 1 + 3  # (10 - 4) // 2
    assert budget_epochs(3.0, [4.0, 1.0]) == 1  # the first epoch alone overruns: one epoch still
    assert budget_epochs(7.0, [1.0, 3.0, 3.0]) == 3  # 6 s left is exactly two more


def test_peers_refuses_a_budget_without_scoring():
    result = run(["benchmarks/peers.py", "--budget", "60", "--samples", "0"])
    assert result.returncode == 2
    assert "--budget must be positive and needs --samples above 0" in result.stderr


def peer_module():
    spec = importlib.util.spec_from_file_location("peers", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ours(state: dict, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mu, sigma) of q(z|x) and the decoder's probabilities at z, of this project's VAE with `state`."""
    vae = VAE(ModelConfig(hidden=(400,), z_dim=50))
    vae.load_state_dict({**vae.state_dict(), **state})
    loc, scale = vae.q.encoder(x)
    return loc, scale, torch.sigmoid(vae.decoder(z))


@pytest.mark.parametrize("peer", ["plain", "pythae", "numpyro"])
@torch.no_grad()
def test_each_peers_weights_give_this_projects_vae_the_peers_q_and_decoder(peer):
    """The weights peers.py scores are the peer's model: the same q(z|x) and p(x|z) on the same inputs (float32;
    the libraries' products may sum in another order, hence the tolerance)."""
    peers = peer_module()
    x = torch.rand(6, 784, generator=torch.Generator().manual_seed(0))
    z = torch.randn(6, 50, generator=torch.Generator().manual_seed(1))
    if peer == "plain":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from reference_vae import PlainVAE

        torch.manual_seed(0)
        vae = PlainVAE(784, (400,), 50, "softplus")
        loc, log_scale = vae.enc(x).chunk(2, -1)
        theirs, state = (loc, log_scale.exp(), torch.sigmoid(vae.dec(z))), peers.plain_weights(vae)
    elif peer == "pythae":
        pytest.importorskip("pythae")
        model = peers.pythae_vae()
        out = model.encoder(x)
        theirs = (out.embedding, (out.log_covariance / 2).exp(), model.decoder(z).reconstruction)
        state = peers.pythae_weights(model)
    else:
        jax = pytest.importorskip("jax")
        pytest.importorskip("numpyro")
        (encode_init, encode), (decode_init, decode) = peers.numpyro_networks()
        _, encoder = encode_init(jax.random.PRNGKey(0), (6, 784))
        _, decoder = decode_init(jax.random.PRNGKey(1), (6, 50))
        loc, scale = encode(encoder, x.numpy())
        theirs = tuple(torch.from_numpy(np.asarray(a)) for a in (loc, scale, decode(decoder, z.numpy())))
        state = peers.numpyro_weights(encoder, decoder)
    for mine, peers_value in zip(ours(state, x, z), theirs):
        torch.testing.assert_close(mine, peers_value, rtol=1e-4, atol=1e-5)


def draws_table(stdout: str) -> dict[str, list[str]]:
    """m2_label_draws.py's table: the cells of each draw's row, by its first cell."""
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| draw ")]
    return {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows}


def test_m2_label_draws_trains_each_draw_then_resumes_or_reads_its_run(tmp_path):
    """Two draws for one epoch, their mean ± sd that of the table's cells; then --epochs 2 resumes draw 2's run
    (its first epoch's accuracy unchanged) and a second call with the same flags trains nothing."""
    draws = ["benchmarks/m2_label_draws.py", "--out", str(tmp_path), "--threads", "1"]
    first = run([*draws, "--epochs", "1", "--draws", "1", "2"])
    assert first.returncode == 0, first.stderr
    rows = draws_table(first.stdout)
    accuracies = [float(rows[f"draw {d}"][0]) for d in (1, 2)]
    mean, sd = re.search(r"test accuracy after epoch 1: (0\.\d{4}) ± (0\.\d{4}) \(2 draws\)", first.stdout).groups()
    # the cells and the line are each rounded to 4 decimals: the mean off by at most 1e-4, the sd by 1.5e-4
    assert abs(float(mean) - np.mean(accuracies)) <= 1e-4 and abs(float(sd) - np.std(accuracies, ddof=1)) <= 1.5e-4
    longer = run([*draws, "--epochs", "2", "--draws", "2"])
    assert longer.returncode == 0, longer.stderr
    assert f"--resume {tmp_path / 'draw-2'}" in longer.stderr and "| 100 labels, after epoch | 1 | 2 |" in longer.stdout
    assert draws_table(longer.stdout)["draw 2"][0] == rows["draw 2"][0]
    again = run([*draws, "--epochs", "2", "--draws", "2"])
    assert again.returncode == 0 and "draw 2:" not in again.stderr and again.stdout == longer.stdout


def test_m2_label_draws_reports_the_test_accuracy_at_each_runs_best_validation_accuracy(tmp_path):
    """With a validation split held out (here 400 of the default digits), each run records its validation
    accuracy; the table adds the test accuracy of the first epoch of highest validation accuracy, and its mean."""
    draws = ["benchmarks/m2_label_draws.py", "--out", str(tmp_path), "--threads", "1", "--epochs", "3"]
    result = run([*draws, "--draws", "1", "--", "--validation", "400"])
    assert result.returncode == 0, result.stderr
    records = files.read_jsonl(tmp_path / "draw-1" / "metrics.jsonl")
    best = max(records, key=lambda r: (r["validation_accuracy"], -r["epoch"]))
    assert draws_table(result.stdout)["draw 1"][3] == f"{best['test_accuracy']:.4f} ({best['epoch']})"
    line = f"test accuracy at each run's best validation accuracy: {best['test_accuracy']:.4f} (1 draw)"
    assert "| at best validation (epoch) |" in result.stdout and line in result.stdout


def test_m2_label_draws_refuses_a_folder_without_a_checkpoint(tmp_path):
    (tmp_path / "draw-1").mkdir()
    result = run(["benchmarks/m2_label_draws.py", "--out", str(tmp_path), "--draws", "1"])
    assert result.returncode == 1 and "exists without a checkpoint" in result.stderr.strip().splitlines()[-1]


def test_m2_ablation_trains_a_variant_and_prints_its_accuracy():
    result = run(["benchmarks/m2_ablation.py", "--epochs", "1", "--variants", "sampled + aux", "--threads", "1"])
    assert result.returncode == 0, result.stderr
    assert re.search(r"\| sampled \+ aux \| 0\.\d{4} \| \d+ \|", result.stdout)


def test_m2_ablation_trains_the_tutorials_initialization_in_the_tutorials_layout():
    result = run(["benchmarks/m2_ablation.py", "--epochs", "1", "--variants", "tutorial init", "--labelled-batches",
                  "--labels-seed", "1", "--threads", "1"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"\| tutorial init \| 0\.\d{4} \| \d+ \|", result.stdout)


def test_the_tutorials_initialization_redraws_the_hidden_layers_alone():
    """Hidden weights and biases ~ N(0, 0.001^2): each layer's sample standard deviation within 5 standard errors
    (sigma / sqrt(2 n)) of 0.001 and its mean within 5 sigma / sqrt(n) of 0; the output layers left as drawn."""
    spec = importlib.util.spec_from_file_location("m2_ablation", ROOT / "benchmarks" / "m2_ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    torch.manual_seed(0)
    m2 = ablation.SemiSupervisedVAE()
    outputs = [network[1].weight.clone() for network in (m2.classifier, m2.encoder, m2.decoder)]
    ablation.tutorial_initialization(m2)
    for network, output in zip((m2.classifier, m2.encoder, m2.decoder), outputs):
        for values in (network[0][0].weight, network[0][0].bias):
            n = values.numel()
            assert abs(values.std().item() - 1e-3) < 5 * 1e-3 / (2 * n) ** 0.5
            assert abs(values.mean().item()) < 5 * 1e-3 / n**0.5
        assert torch.equal(network[1].weight, output)


def test_binarization_draw_times_both_draws_and_epochs_with_each():
    result = run(["benchmarks/binarization_draw.py", "--epochs", "1", "--rounds", "1"])
    assert result.returncode == 0, result.stderr
    assert "| torch.bernoulli(x) |" in result.stdout and "| the eager step's draw (rand < x) |" in result.stdout
    assert "eager epochs with torch.bernoulli: [" in result.stdout and "eager epochs with rand < x: [" in result.stdout


def test_step_profile_prints_the_profilers_table_and_the_milliseconds_per_step():
    """Every row of the table asked for: which kernels lead it depends on what else the machine runs (a CI run
    beside two trainings had neither the GEMM nor Adam in its top five)."""
    result = run(["benchmarks/step_profile.py", "--skip", "2", "--steps", "3", "--rows", "1000"])
    assert result.returncode == 0, result.stderr
    assert "aten::mm" in result.stdout and "aten::_fused_adam_" in result.stdout
    step, gemms = re.search(
        r"eager step, batch 256, 1 thread\(s\): ([\d.]+) ms a step .* GEMMs ([\d.]+) ms", result.stdout
    ).groups()
    assert 0 < float(gemms) < float(step)


@pytest.mark.parametrize(
    "bad, message",
    [(["--skip", "10"], "--skip + --steps must fit in the first epoch's 15 full batches"),
     (["--steps", "0"], "--steps must be a whole number from 1 to 10,000, got 0")],
)  # fmt: skip
def test_step_profile_refuses_what_it_cannot_profile_in_one_line(bad, message):
    result = run(["benchmarks/step_profile.py", *bad])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_gemm_routes_prints_every_product_on_every_route():
    result = run(["benchmarks/gemm_routes.py", "--batch", "8", "--calls", "1", "--repeats", "1"])
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| encoder") or line.startswith("| decoder")]
    assert len(rows) == 11 * 4 and {row.split(" | ")[2] for row in rows} == {"mkl", "linear", "onednn", "onednn-dense"}
    floor = result.stdout.split("| route | a step's 11 products (ms) | an epoch's 7,500 steps (s) |")[1].splitlines()
    mkl_step = sum(float(row.split(" | ")[3]) for row in rows if row.split(" | ")[2] == "mkl")
    step_ms, epoch_s = (float(cell) for cell in floor[2].strip("| ").split(" | ")[1:])
    assert floor[2].startswith("| mkl |") and step_ms == pytest.approx(mkl_step, abs=6e-3)
    assert epoch_s == pytest.approx(step_ms * 7_500 / 1e3, abs=0.01)


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--epochs", "0"], "--epochs must be a whole number from 1 to 1,000,000, got 0"),
        (["--eval-images", "0"], "--eval-images must be a whole number from 1 to 100,000,000, got 0"),
        (["--threads", "0"], "--threads must be a whole number from 1 to 4,096, got 0"),
        (["--curve-every", "0"], "--curve-every must be a whole number from 1 to 1,000,000, got 0"),
        (["--reference-until", "-80"], "--reference-until needs --curve-every"),
        (["--estimator", "dreg"], "the paper's rows train with --estimator trace, meanfield or iwae, not dreg"),
    ],
)
def test_reproduce_iwae_refuses_bad_values_in_one_line_as_the_scripts_do(bad, message, tmp_path):
    """The README's paper command checks its flags against the same declarations as training: one line and
    exit 2, never a traceback, before any folder is made."""
    result = subprocess.run(
        [sys.executable, "benchmarks/reproduce_iwae.py", *bad, "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr == f"error: {message}\n" and not (tmp_path / "run").exists()


def test_reproduce_iwae_prints_a_row_beside_the_paper(data_dir, tmp_path):
    result = run(
        [
            "benchmarks/reproduce_iwae.py",
            "--data-dir",
            str(data_dir),
            "--epochs",
            "1",
            "--batch-size",
            "1000",
            "--eval-samples",
            "5",
            "--eval-images",
            "100",
            "--reference",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert (
        "| pyro-vae | VAE k=1 | 1, 1000, geometric |" in result.stdout
        and "| plain PyTorch | VAE k=1 |" in result.stdout
    )
    assert "-86.76" in result.stdout
    rows = json.loads((tmp_path / "run" / "reproduce_iwae.json").read_text())["rows"]
    assert len(rows) == 2 and all(r["test_log_likelihood"] < 0 for r in rows)


def test_reproduce_iwae_records_the_quality_curve_and_the_time_to_a_target(data_dir, tmp_path):
    """--curve-every: log p(x) on a test subset every N epochs into metrics.jsonl and quality_curve.png; the
    plain twin trains on the same recipe (the paper's: its schedule, Adam eps, output bias) and stops at
    --reference-until; --resume hands a run's folder back (a finished run is left as it is)."""
    common = [
        "benchmarks/reproduce_iwae.py",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "2",
        "--paper-recipe",
        "--batch-size",
        "1000",
        "--curve-every",
        "1",
        "--curve-images",
        "40",
        "--curve-samples",
        "4",
        "--eval-samples",
        "0",
        "--threads",
        "1",
    ]
    result = run([*common, "--out", str(tmp_path / "run")])
    assert result.returncode == 0, result.stderr
    metrics = files.read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [(m["eval_images"], m["eval_samples"]) for m in metrics] == [(40, 4), (40, 4)]
    assert (tmp_path / "run" / "quality_curve.png").stat().st_size > 0
    assert "pyro-vae: log p(x) >= -90.0 on the curve's 40 images (K = 4): not reached" in result.stdout
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["lr_schedule"], config["adam_eps"], config["init_output_bias"]) == ("paper", 1e-4, True)

    reference = run([*common, "--reference-only", "--reference-until", "-1000", "--out", str(tmp_path / "plain")])
    assert reference.returncode == 0, reference.stderr
    report = json.loads((tmp_path / "plain" / "reproduce_iwae.json").read_text())
    assert report["rows"][0]["epochs"] == 1  # stopped at the first curve point above -1000
    assert report["time_to"]["plain PyTorch"]["-90.0"] is None
    assert [c["lr"] for c in report["curves"]["plain PyTorch"]] == [1e-3]

    resumed = run([*common[:-6], "--eval-samples", "0", "--resume", str(tmp_path / "run")])
    assert resumed.returncode == 0, resumed.stderr
    assert "finished run" in resumed.stderr and "| pyro-vae | VAE k=1 | 2, 1000, paper |" in resumed.stdout

    compared = run(
        [
            "benchmarks/quality_curves.py",
            str(tmp_path / "run"),
            str(tmp_path / "plain"),
            "--levels",
            "-1000",
            "-1",
            "--out",
            str(tmp_path / "curves.png"),
        ]
    )
    assert compared.returncode == 0, compared.stderr
    (plain_line,) = [line for line in compared.stdout.splitlines() if line.startswith("| plain PyTorch (plain) |")]
    assert plain_line.endswith(
        "min (epoch 1) | not reached | " + plain_line.split(" | ")[-1]
    )  # -1000 at once, -1 never
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_gradient_snr_measures_every_estimator_at_every_k_and_fits_the_slopes(tmp_path):
    args = ["--epochs", "1", "--ks", "1", "3", "--draws", "8", "--batch", "10", "--bootstrap", "20"]
    args += ["--estimators", "trace", "dreg", "--threads", "1", "--out", str(tmp_path)]
    result = run(["benchmarks/gradient_snr.py", *args])
    assert result.returncode == 0, result.stderr
    snr = (tmp_path / "snr.csv").read_text().splitlines()
    assert len(snr) == 1 + 2 * 2 * 2  # header, 2 snapshots x 2 estimators x 2 values of K
    assert len((tmp_path / "slopes.csv").read_text().splitlines()) == 1 + 2 * 2
    assert (tmp_path / "snr.png").stat().st_size > 0 and "slope of log encoder SNR" in result.stdout


def test_the_snr_slope_is_the_power_of_k():
    """SNR = c K^p for every bootstrap row gives the slope p exactly."""
    import torch

    from pyro_vae.experiments.gradient_snr import slope

    ks = [1, 3, 10, 30, 100]
    snr = torch.tensor([[2.0 * k**0.5 for k in ks], [0.3 * k**-0.5 for k in ks]], dtype=torch.float64)
    torch.testing.assert_close(slope(ks, snr), torch.tensor([0.5, -0.5], dtype=torch.float64))


def test_ais_sandwich_prints_is_against_ais_and_the_bdmc_bounds(tmp_path):
    folder = tmp_path / "run"
    trained = run(["scripts/svi_train.py", "--hidden", "16", "--z-dim", "2", "--epochs", "1", "--threads", "1",
                   "--no-progress", "--out", str(folder)])  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    args = ["--images", "5", "--samples", "20", "--ais-steps", "3", "--chains", "2", "--bdmc-images", "4"]
    result = run(["benchmarks/ais_sandwich.py", str(folder), *args, "--bdmc-chains", "2", "--bdmc-steps", "3"])
    assert result.returncode == 0, result.stderr
    report = json.loads((folder / "ais_sandwich.json").read_text())
    assert [r["method"] for r in report["test"]] == ["IS, K = 20", "AIS, T = 3"]
    (bounds,) = report["bdmc"]
    assert bounds["lower"] < bounds["upper"]  # three steps leave a wide gap
    assert "| AIS, T = 3, 2 chains |" in result.stdout


def test_threads_benchmark_times_the_default_beside_fixed_counts():
    result = run(["benchmarks/threads.py", "--load", "0", "--threads", "1", "--epochs", "1"])
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 0 |")]
    assert [row.split(" | ")[1] for row in rows] == ["default", "1"] and rows[1].endswith("| 1.00x |")


def test_reproduce_iwae_two_layers_stops_on_sigterm_with_its_own_resume_command(data_dir, tmp_path):
    """A scheduler's SIGTERM during the paper's two-layer model: a checkpoint, one line naming this script's
    --resume (not the training command's), the exit status 143."""
    args = ["benchmarks/reproduce_iwae.py", "--data-dir", str(data_dir), "--stochastic-layers", "2"]
    args += ["--epochs", "3", "--eval-samples", "0", "--threads", "1", "--out", str(tmp_path / "run")]
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if line.startswith("training on mnist"):  # printed once the stop signals are caught
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=300) == 143, rest
    assert f"Resume with: python benchmarks/reproduce_iwae.py --resume {tmp_path / 'run'}" in rest
    assert "Traceback" not in rest and (tmp_path / "run" / "checkpoint.pt").exists()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["model"]["stochastic_layers"], config["model"]["z_dim"], config["model"]["z2_dim"]) == (2, 100, 50)


FAKE_SCRIPT = """import sys
from visdom import Visdom
if __name__ == "__main__":
    assert pyro.__version__.startswith("1.9.1")
    from utils.mnist_cached import ROOT
    print("args", sys.argv[1:], "root", ROOT, "visdom", Visdom)
"""


def test_pyro_tutorial_m2_runs_the_script_edited_on_local_mnist(tmp_path: Path):
    """The harness copies the examples, unpacks MNIST where the script reads it, drops the visdom import and the
    version assertion, points the data root at the copy, and passes the arguments after -- to the script."""
    examples, data = tmp_path / "vae", tmp_path / "data" / "MNIST" / "raw"
    (examples / "utils").mkdir(parents=True)
    data.mkdir(parents=True)
    (examples / "ss_vae_M2.py").write_text(FAKE_SCRIPT)
    (examples / "utils" / "mnist_cached.py").write_text(
        "ROOT = None\nroot = get_data_directory(__file__)\nROOT = root\n"
    )
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name in names:
        (data / f"{name}.gz").write_bytes(gzip.compress(name.encode()))
    result = run(["benchmarks/pyro_tutorial_m2.py", str(examples), "--data-dir", str(tmp_path / "data"), "--",
                  "-sup", "100", "-bs", "100"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "args ['-sup', '100', '-bs', '100', '-log'," in result.stdout
    assert "/data visdom None" in result.stdout
    assert (examples / "ss_vae_M2.py").read_text() == FAKE_SCRIPT  # the user's copy is left alone


def test_pyro_tutorial_m2_refuses_a_script_it_does_not_know():
    harness = importlib.util.spec_from_file_location("harness", ROOT / "benchmarks" / "pyro_tutorial_m2.py")
    module = importlib.util.module_from_spec(harness)
    harness.loader.exec_module(module)
    with pytest.raises(SystemExit, match="expected one 'from visdom import Visdom' in the script, found 0"):
        module.patched("import torch\n", module.EDITS["ss_vae_M2.py"], "/data")


def test_pyro_svi_without_a_loss_still_steps_adam_on_a_zero_gradient():
    """What docs/RESULTS.md says of Pyro's M2 script: its auxiliary SVI, stepped on a batch where its model has
    no sample site, moves every parameter by Adam's momentum step on a zero gradient,
    lr * (b1 m_1 / (1 - b1^2)) / (sqrt(b2 v_1 / (1 - b2^2)) + eps), with m_1 = (1 - b1) g, v_1 = (1 - b2) g^2."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    pyro.clear_param_store()
    torch.manual_seed(0)
    net, (lr, b1, b2, eps) = torch.nn.Linear(3, 1).double(), (0.01, 0.95, 0.999, 1e-8)
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, dtype=torch.float64)

    def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("net", net)
        if y is not None:
            with pyro.plate("data"):
                pyro.sample("y", dist.Normal(net(x).squeeze(-1), 1.0), obs=y)

    optimizer = Adam({"lr": lr, "betas": (b1, b2), "eps": eps})
    elbo, aux = (SVI(model, lambda x, y=None: None, optimizer, Trace_ELBO()) for _ in range(2))
    grad = torch.func.grad(
        lambda w: -dist.Normal(torch.nn.functional.linear(x, w, net.bias).squeeze(-1), 1.0).log_prob(y).sum()
    )(net.weight.detach())
    elbo.step(x, y)
    before = net.weight.detach().clone()
    aux.step(x)
    m, v = b1 * (1 - b1) * grad / (1 - b1**2), b2 * (1 - b2) * grad**2 / (1 - b2**2)
    torch.testing.assert_close(before - net.weight.detach(), lr * m / (v.sqrt() + eps), rtol=1e-9, atol=1e-15)


def test_optimizer_step_times_adam_over_the_peers_vae_and_refuses_no_rounds():
    from pyro_vae.core.model import parameter_count

    result = run(["benchmarks/optimizer_step.py", "--calls", "2", "--rounds", "1"])
    assert result.returncode == 0, result.stderr
    count = parameter_count(ModelConfig(hidden=(400,), z_dim=50))
    assert f"fused Adam over {count:,} parameters ({28 * count / 1e6:.1f} MB" in result.stdout
    assert "SVIOptimizer step:" in result.stdout and "its fused kernel alone:" in result.stdout
    refused = run(["benchmarks/optimizer_step.py", "--rounds", "0"])
    assert refused.returncode == 2 and "--rounds must be a whole number of at least 1, got 0" in refused.stderr
