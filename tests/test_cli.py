"""The training command end to end: outputs, messages and exit statuses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_vae import files
from pyro_vae.cli.train import main
from pyro_vae.training.checkpoint import store

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = [
    ".lock",
    "config.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "summary.json",
    "loss_curve.png",
    "reconstructions.png",
    "samples.png",
    "latent.png",
]


def test_one_short_epoch_writes_every_output(tmp_path):
    """The real entry point, as a user runs it, on the offline default data."""
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/svi_train.py",
            "--epochs",
            "1",
            "--hidden",
            "64",
            "--z-dim",
            "4",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    config = json.loads((out / "config.json").read_text())
    assert config["estimator"] == "trace" and config["model"]["hidden"] == [64]
    (record,) = files.read_jsonl(out / "metrics.jsonl")
    assert set(record) >= {"epoch", "step", "train_loss", "test_loss", "seconds", "images_per_second"}
    assert record["step"] == 16 and 100 < record["test_loss"] < 700  # 4000 images / 256
    summary = json.loads((out / "summary.json").read_text())
    assert summary["binarization"] == "dynamic"
    checkpoint = store.load(out / "checkpoint.pt")
    assert checkpoint.progress.epoch == 1 and store.FORMAT == 2
    assert (out / "checkpoint.pt").read_bytes().startswith(b"pyro-vae checkpoint 2 ")
    assert "epoch   1/1" in result.stderr and "nats/image" in result.stderr


def test_runs_are_reproducible(tmp_path):
    args = ["--epochs", "1", "--hidden", "32", "--z-dim", "2", "--no-progress", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / r / "metrics.jsonl").read_text()) for r in "ab")
    assert a["train_loss"] == b["train_loss"] and a["test_loss"] == b["test_loss"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_exits_2(tmp_path, capsys):
    assert main(["--cuda", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable CUDA GPU" in err
    assert not (tmp_path / "run").exists()


TINY = ["--hidden", "16", "--z-dim", "2", "--no-progress", "--threads", "1"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_a_gpu_run_resumes_on_the_cpu_with_no_cuda_and_a_notice(tmp_path, capsys):
    """A checkpoint marked as a GPU run's (config cuda, a CUDA generator state) on a machine without one:
    resuming as it is says how to go on, in one line; --no-cuda goes on, saying it is no longer bit for bit."""
    out = tmp_path / "run"
    assert main(TINY + ["--epochs", "1", "--out", str(out)]) == 0
    state = store.load(out / "checkpoint.pt")
    state.config["cuda"] = True
    state.rng["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    store.save(out / "checkpoint.pt", state)
    capsys.readouterr()
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable CUDA GPU" in err and "switch --cuda off (--no-cuda)" in err
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress", "--no-cuda"]) == 0
    assert "notice: this run trained on the GPU and resumes on the CPU" in capsys.readouterr().err
    resumed = store.load(out / "checkpoint.pt")
    assert resumed.progress.epoch == 2 and resumed.config["cuda"] is False


def test_a_resume_names_each_change_of_device_or_compilation_and_no_switches_them_off(tmp_path, capsys):
    """The start line's notices (`build.changed_machine`) for a device and a compilation change; --no-compile
    on the command line resumes a compiled run eagerly."""
    from pyro_vae.training.restore import changed_machine

    assert changed_machine({"cuda": False, "compile": False}, {"cuda": False, "compile": False}) == []
    moved = changed_machine(
        {"cuda": True, "compile": True, "compile_backend": "graph"}, {"cuda": False, "compile": False}
    )
    assert "trained on the GPU and resumes on the CPU" in moved[0]
    assert "trained compiled (graph) and resumes eagerly" in moved[1]
    out = tmp_path / "run"
    assert main(TINY + ["--compile", "--compile-backend", "graph", "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress", "--no-compile"]) == 0
    assert "notice: this run trained compiled (graph) and resumes eagerly" in capsys.readouterr().err
    assert store.load(out / "checkpoint.pt").config["compile"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_runs_cross_between_the_gpu_and_the_cpu(tmp_path, capsys):
    """A run trained on the GPU resumes on the CPU (--no-cuda), and one trained on the CPU resumes on the GPU
    (--cuda), each with its notice and finite losses."""
    for first, then, notice in (
        (["--cuda"], ["--no-cuda"], "trained on the GPU and resumes on the CPU"),
        ([], ["--cuda"], "trained on the CPU and resumes on the GPU"),
    ):
        out = tmp_path / ("gpu" if first else "cpu")
        assert main(TINY + first + ["--epochs", "1", "--out", str(out)]) == 0
        capsys.readouterr()
        assert main(["--resume", str(out), "--epochs", "2", "--no-progress"] + then) == 0
        assert f"notice: this run {notice}" in capsys.readouterr().err
        losses = [json.loads(line)["test_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--likelihood", "bernoulli", "--binarize", "none"], "needs pixels that are 0 or 1"),
        (["--dataset", "mnist", "--data-dir", "/no/such/folder"], "does not exist"),
        (["--lr", "-1"], "--lr must be a number in (0, 10], got -1.0"),
        (["--beta", "-1"], "--beta must be a number in [0, 1e+06], got -1.0"),
        (["--estimator", "score", "--beta", "0.5"], "would scale the score function's weight too"),
        (["--estimator", "score", "--guide", "delta"], "it has no score function"),
        (["--estimator", "jit-trace", "--beta", "0"], "Pyro refuses a zero scale"),
        (["--guide", "delta", "--eval-samples", "5"], "no density to importance-sample"),
        (["--num-particles", "0"], "--num-particles must be a whole number from 1 to 100,000, got 0"),
        (["--learn-sigma"], "--learn-sigma applies only to --likelihood gaussian"),
        (["--epochs", "0"], "--epochs must be a whole number from 1 to 1,000,000, got 0"),
        (["--dataset", "binarized-mnist", "--data-dir", "."], "pyro-vae cannot download them"),
        (["--guide", "local", "--local-points", "5000"], "more than the 4000 training images"),
        (["--guide", "local", "--local-lr", "0"], "--local-lr must be a number in (0, 1000], got 0.0"),
        (["--batch-size", str(10**30)], "--batch-size must be a whole number from 1 to 10,000,000"),
        (["--z-dim", str(10**30)], "--z-dim must be a whole number from 1 to 100,000"),
        (["--flow-layers", str(10**30)], "--flow-layers must be a whole number from 1 to 64"),
        (["--kl-warmup", "nan"], "--kl-warmup must be a number in [0, 1e+06], got nan"),
        (["--kl-warmup", "inf"], "--kl-warmup must be a number in [0, 1e+06], got inf"),
        (["--sigma", "1e-320", "--likelihood", "gaussian"], "--sigma must be a number in [1e-06, 1e+06], got 1e-320"),
        (["--local-lr", "1e300"], "--local-lr must be a number in (0, 1000], got 1e+300"),
        (["--eval-samples", str(10**30)], "--eval-samples must be a whole number from 0 to 1,000,000"),
        (["--seed", "-5"], "--seed must be a whole number from 0 to 4,294,967,295, got -5"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(args + ["--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("error: ")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "out, message",
    [
        ("/dev/null", "exists and is not a folder"),
        ("/proc/pyro-vae/run", "cannot make the run folder"),
        ("x" * 300, "File name too long"),
    ],
)
def test_an_output_folder_that_cannot_be_made_is_one_line(out, message, capsys):
    assert main(["--epochs", "1", "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "checkpoint" not in err


def test_non_empty_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["--out", str(tmp_path), "--epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "args, message",
    [(["--dataset", "cifar"], "invalid choice"), (["--hidden", "4x"], "expected comma-separated layer sizes")],
)
def test_argparse_rejects_malformed_flags(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_one_dimensional_latent_space_trains_and_plots(tmp_path):
    """z-dim 1 once crashed in the latent plot, so such a run could never finish."""
    out = tmp_path / "run"
    assert (
        main(["--z-dim", "1", "--hidden", "16", "--epochs", "1", "--no-progress", "--threads", "1", "--out", str(out)])
        == 0
    )
    assert (out / "latent.png").stat().st_size > 0 and (out / "summary.json").exists()


def test_evaluate_at_a_small_k_says_why_there_is_no_k_hat_instead_of_nan(tmp_path, capsys):
    from pyro_vae.cli.evaluate import main as evaluate_main

    out = tmp_path / "run"
    assert main(["--hidden", "16", "--z-dim", "2", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert evaluate_main([str(out), "--samples", "2", "--images", "5"]) == 0
    printed = capsys.readouterr().out
    assert "Pareto k-hat not estimated (K = 2 is too few for its tail fit (25 or more))" in printed
    assert "nan" not in printed


def test_long_work_written_to_a_file_says_where_it_is_a_line_at_a_time(tmp_path, capsys, monkeypatch):
    """With stderr no terminal (a long run's log file), the log p(x) estimate and the amortization gap's fits
    write lines with what is done and the time left (every LINE_SECONDS; here every update)."""
    from pyro_vae.cli.evaluate import main as evaluate_main
    from pyro_vae.evaluation import progress

    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    out = tmp_path / "run"
    assert main(["--hidden", "16", "--z-dim", "2", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    argv = [str(out), "--samples", "20", "--images", "30", "--max-rows", "200", "--amortization-gap", "3"]
    assert evaluate_main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"^log p\(x\), K = 20: 10 / 30 images, \d+ s so far, about \d+ s left$", err, re.M), err
    assert re.search(r"^amortization gap: per-image fits of 30 images: 2 / 3 steps, .* left$", err, re.M), err


def test_evaluate_refuses_a_k_that_would_run_for_days(tmp_path, capsys):
    from pyro_vae.cli.evaluate import main as evaluate_main

    assert evaluate_main([str(tmp_path), "--samples", "10000000"]) == 2
    assert "--samples must be a whole number from 1 to 1,000,000, got 10000000" in capsys.readouterr().err


def test_grey_pixel_likelihoods_train(tmp_path):
    for likelihood in ("gaussian", "continuous-bernoulli"):
        out = tmp_path / likelihood
        assert (
            main(
                [
                    "--likelihood",
                    likelihood,
                    "--epochs",
                    "1",
                    "--hidden",
                    "32",
                    "--z-dim",
                    "2",
                    "--out",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
        assert json.loads((out / "summary.json").read_text())["binarization"] == "none"


def test_eval_samples_writes_log_likelihood_and_evaluate_reads_the_checkpoint(tmp_path, capsys):
    """--eval-samples K puts log p(x) into metrics.jsonl every --eval-every epochs and at the end; the
    evaluate command recomputes it from the checkpoint: the same seed and K give the same number."""
    from pyro_vae.cli.evaluate import main as evaluate_main

    out = tmp_path / "run"
    assert (
        main(
            [
                "--epochs",
                "3",
                "--hidden",
                "32",
                "--z-dim",
                "3",
                "--eval-samples",
                "20",
                "--eval-every",
                "2",
                "--lr-final",
                "1e-4",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    records = files.read_jsonl(out / "metrics.jsonl")
    assert ["test_log_likelihood" in r for r in records] == [False, True, True]
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 1e-3 * 0.1**0.5, 1e-4])
    final = records[-1]
    # log p(x) >= its bound L_20 >= the ELBO, up to the noise of the one-sample ELBO
    assert final["test_log_likelihood"] > -final["test_loss"]
    assert evaluate_main([str(out), "--samples", "20", "--images", "1000"]) == 0
    result = json.loads((out / "evaluation-epoch3-K20.json").read_text())
    assert result["test_log_likelihood"] == pytest.approx(final["test_log_likelihood"], rel=1e-6)
    assert "log p(x)" in capsys.readouterr().out


def test_evaluate_without_a_checkpoint_says_why(tmp_path, capsys):
    from pyro_vae.cli.evaluate import main as evaluate_main

    assert evaluate_main([str(tmp_path)]) == 2
    assert "not a run folder (no config.json or checkpoint.pt)" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text("{}")
    assert evaluate_main([str(tmp_path)]) == 2
    assert "run folders inside it: a" in capsys.readouterr().err
    assert evaluate_main([str(tmp_path / "a")]) == 2
    assert (
        "stopped before its first checkpoint (no checkpoint.pt); train it again (the same --out reuses"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("guide", ["full-covariance", "flow", "local"])
def test_richer_guides_train_resume_and_evaluate_from_the_command_line(tmp_path, guide):
    from pyro_vae.cli.evaluate import main as evaluate_main

    out = tmp_path / guide
    common = [
        "--hidden",
        "32",
        "--z-dim",
        "2",
        "--guide",
        guide,
        "--estimator",
        "meanfield",
        "--no-progress",
        "--local-points",
        "500",
    ]
    assert main([*common, "--epochs", "1", "--out", str(out)]) == 0
    assert main([*common, "--epochs", "2", "--resume", str(out)]) == 0
    records = files.read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["test_loss"] < records[0]["test_loss"]
    assert evaluate_main([str(out), "--samples", "10", "--images", "100"]) == 0
    assert json.loads((out / "evaluation-epoch2-K10.json").read_text())["epoch"] == 2


def test_local_guide_trains_on_its_fixed_subsets(tmp_path):
    """--guide local trains on --local-points training images and fits as many test images' q with the
    decoder fixed; its test loss falls with training, and evaluate uses the same rows."""
    from pyro_vae.cli.evaluate import main as evaluate_main

    out = tmp_path / "local"
    assert (
        main(
            [
                "--guide",
                "local",
                "--local-points",
                "200",
                "--hidden",
                "32",
                "--z-dim",
                "2",
                "--epochs",
                "4",
                "--batch-size",
                "50",
                "--eval-samples",
                "20",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())["model"]
    assert (config["local_points"], config["local_test_points"]) == (200, 200)
    records = files.read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [4, 8, 12, 16]  # 200 training images a epoch, batch 50
    assert records[-1]["test_loss"] < records[0]["test_loss"]
    state = store.load(out / "checkpoint.pt").model_state
    assert state["q.table.weight"].shape == (400, 4)
    assert evaluate_main([str(out), "--samples", "20"]) == 0
    result = json.loads((out / "evaluation-epoch4-K20.json").read_text())
    assert result["images"] == 200 and result["test_log_likelihood"] == pytest.approx(
        records[-1]["test_log_likelihood"], rel=1e-6
    )
    assert evaluate_main([str(out), "--amortization-gap", "5"]) == 2


def test_evaluate_measures_the_amortization_gap(tmp_path, capsys):
    """--amortization-gap S fits q per image with the decoder fixed, starting at the encoder's q; after
    enough steps its ELBO is above the encoder's."""
    from pyro_vae.cli.evaluate import main as evaluate_main

    out = tmp_path / "run"
    assert main(["--hidden", "32", "--z-dim", "2", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    assert evaluate_main([str(out), "--samples", "10", "--images", "100", "--amortization-gap", "100"]) == 0
    result = json.loads((out / "evaluation-epoch2-K10.json").read_text())
    assert result["amortization_gap"] == pytest.approx(result["local_elbo"] - result["amortized_elbo"])
    assert result["amortization_gap"] > 0
    assert "amortization gap" in capsys.readouterr().out


def test_evaluate_estimates_log_px_by_ais_and_brackets_simulated_data_by_bdmc(tmp_path, capsys):
    """--ais T prints AIS's estimate beside importance sampling's; --bdmc both bounds on simulated images,
    the lower below the upper; both recorded in the evaluation's JSON. Bad combinations exit 2 in one line."""
    from pyro_vae.cli.evaluate import main as evaluate_main

    out = tmp_path / "run"
    assert main(["--hidden", "32", "--z-dim", "2", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    command = [str(out), "--samples", "50", "--images", "20", "--ais", "30", "--chains", "4", "--leapfrog", "3"]
    assert evaluate_main([*command, "--bdmc"]) == 0
    result = json.loads((out / "evaluation-epoch2-K50.json").read_text())
    assert result["ais_steps"] == 30 and result["bdmc_images"] == 20
    assert result["bdmc_lower"] < result["bdmc_upper"]
    assert result["bdmc_gap"] == pytest.approx(result["bdmc_upper"] - result["bdmc_lower"])
    printed = capsys.readouterr().out
    assert "AIS (T = 30, 4 chains" in printed and "BDMC on 20 images simulated" in printed
    for bad, message in ((["--bdmc"], "--ais STEPS"), (["--ais", "10", "--chains", "0"], "--chains")):
        assert evaluate_main([str(out), *bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate", "sample", "compare", "sweep"])
def test_a_mistyped_flag_is_one_line_with_the_flag_it_resembles(command, capsys):
    """Every command: an unknown flag close to a real one is named, in one line that points to --help."""
    import importlib

    entry = importlib.import_module(f"pyro_vae.cli.{command}").main
    with pytest.raises(SystemExit) as exit_:
        entry(["RUN", "--seeed", "1"] if command in ("evaluate", "sample") else ["--seeed", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "unrecognized arguments: --seeed 1 (did you mean --seed" in err and err.endswith("--help\n")


def test_evaluate_refuses_a_model_with_absurd_weights_before_printing_a_number(tmp_path, capsys):
    """Decoder weights of 1e38 (finite, checksum true): one line and exit 2, never `log p(x) nan`; a resume is
    refused alike, before Pyro could warn of a NaN."""
    from pyro_vae.cli.evaluate import main as evaluate_main

    out = tmp_path / "run"
    assert main(["--hidden", "16", "--z-dim", "2", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    state = store.load(out / "checkpoint.pt")
    for name, value in state.model_state.items():
        if name.startswith("decoder") and name.endswith("weight"):
            value.fill_(1e38)
    store.save(out / "checkpoint.pt", state)
    assert evaluate_main([str(out), "--samples", "10"]) == 2
    captured = capsys.readouterr()
    assert "weights are damaged or out of any sensible range" in captured.err and "nan" not in captured.out
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 2  # nor trains from them
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "so training cannot go on from them" in err and "Encountered NaN" not in err


@pytest.mark.parametrize("out", ["/dev/null", "/proc/x", "long"])
def test_sample_refuses_an_out_that_cannot_be_a_folder_in_one_line(tmp_path, capsys, out):
    from pyro_vae.cli.sample import main as sample_main

    run = tmp_path / "run"
    assert main(["--hidden", "16", "--z-dim", "2", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    out = str(tmp_path / ("a" * 300)) if out == "long" else out
    capsys.readouterr()
    assert sample_main([str(run), "--out", out, "--prior", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot make the picture folder") and err.count("\n") == 1


@pytest.mark.parametrize("command", ["evaluate", "sample", "compare"])
def test_ctrl_c_in_the_other_commands_is_one_line_and_exit_130(command, tmp_path, capsys, monkeypatch):
    import importlib

    module = importlib.import_module(f"pyro_vae.cli.{command}")

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    if command == "compare":
        monkeypatch.setattr(module.compare, "load_data", pressed)
        argv = ["--out", str(tmp_path / "c")]
    else:
        monkeypatch.setattr(module, "load_run", pressed)
        argv = [str(tmp_path)]
    assert module.main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted (Ctrl-C)") and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "command, args, message",
    [
        ("evaluate", ["--seed", str(2**64)], "--seed must be a whole number from 0 to 18,446,744,073,709,551,615"),
        ("evaluate", ["--threads", "0"], "--threads must be a whole number from 1 to 4,096"),
        ("evaluate", ["--threads", "-1"], "--threads must be a whole number from 1 to 4,096"),
        ("evaluate", ["--threads", "10000000000"], "--threads must be a whole number from 1 to 4,096"),
        ("sample", ["--seed", str(2**64)], "--seed must be a whole number from 0 to 18,446,744,073,709,551,615"),
        ("sample", ["--seed", "-1"], "--seed must be a whole number from 0 to 18,446,744,073,709,551,615"),
        ("compare", ["--threads", "0"], "--threads must be a whole number from 1 to 4,096"),
        ("compare", ["--threads", "-1"], "--threads must be a whole number from 1 to 4,096"),
        ("compare", ["--steps", "1000000000"], "--steps must be a whole number from 1 to 1,000,000"),
        ("compare", ["--draws", "2"], "--draws must be a whole number from 3 to 100,000"),
        ("compare", ["--seeds", "100000"], "--seeds must be a whole number from 1 to 100"),
        ("compare", ["--seeds", "1000000000"], "--seeds must be a whole number from 1 to 100, got 1000000000"),
        ("compare", ["--iwae-particles", "1000000000"], "--iwae-particles must be a whole number from 1 to 100,000"),
        ("compare", ["--early-step", "50", "--steps", "10"], "--early-step (50) must come before the end of training"),
        ("compare", ["--iwae-particles", "100000", "--batch-size", "10000"], "GiB of memory at once"),
        ("sweep", ["--samples", "1000000000"], "--samples must be a whole number from 1 to 100,000"),
    ],
)
def test_every_command_holds_seed_and_threads_to_the_apis_bounds(command, args, message, tmp_path, capsys):
    """--threads is bound as the training command's (TrainConfig's declaration), --seed as the Python API's
    (any seed of torch's generators), checked before any run is loaded."""
    import importlib

    argv = (
        [str(tmp_path / "run"), *args] if command in ("evaluate", "sample") else [*args, "--out", str(tmp_path / "c")]
    )
    try:
        status = importlib.import_module(f"pyro_vae.cli.{command}").main(argv)
    except SystemExit as exit_:  # argparse's own error line
        status = exit_.code
    assert status == 2 and not (tmp_path / "c").exists()  # refused before any folder is made
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args, names",
    [
        (["--num-particles", "100000"], "25,600,000 rows (--batch-size 256 x --num-particles 100,000)"),
        (["--hidden", "100000,100000"], "through a model of 20,172,200,884 parameters"),
        (["--estimator", "miwae", "--num-particles", "10000", "--iwae-copies", "100"], "x --iwae-copies 100"),
    ],
)
def test_a_step_that_cannot_fit_in_memory_is_refused_before_anything_is_allocated(args, names, tmp_path, capsys):
    assert main([*args, "--out", str(tmp_path / "run"), "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert names in err and "GiB of memory at once" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_an_evaluation_chunk_that_cannot_fit_is_refused_in_one_line(tmp_path, capsys):
    from pyro_vae.cli.evaluate import main as evaluate_main

    out = tmp_path / "run"
    assert main(["--hidden", "16", "--z-dim", "2", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert evaluate_main([str(out), "--max-rows", "100000000", "--samples", "1000000"]) == 2
    err = capsys.readouterr().err
    assert "(--max-rows 100,000,000) needs about" in err and err.count("\n") == 1


def test_a_folder_whose_run_stopped_before_its_first_checkpoint_is_reused_by_the_same_out(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"epoch": 1, "stale": true}\n')
    (out / ".metrics.jsonl.x.tmp").write_text("")
    assert main(["--hidden", "16", "--z-dim", "2", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    assert "stale" not in (out / "metrics.jsonl").read_text() and not list(out.glob(".*.tmp"))
    assert main(["--hidden", "16", "--z-dim", "2", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err  # with a checkpoint: never overwritten


def test_evaluate_to_a_full_disk_says_where_the_results_are_in_one_line(tmp_path):
    out = tmp_path / "run"
    assert main(["--hidden", "16", "--z-dim", "2", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    root = Path(__file__).resolve().parents[1]
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "scripts/evaluate.py", str(out), "--samples", "3", "--images", "3", "--threads", "1"],
            cwd=root, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert (
        f"cannot print the results (No space left on device); they are saved in {out}/evaluation-epoch1-K3.json"
        in result.stderr
    )
    assert (out / "evaluation-epoch1-K3.json").exists()
