"""Exact resume, crash safety, Ctrl-C, non-finite losses and safe checkpoint loading."""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pyro_vae.training.build as build_module
import pyro_vae.training.objective as objective_module
import pyro_vae.training.run as run_module
from pyro_vae import files
from pyro_vae.cli.train import main
from pyro_vae.errors import ConfigError
from pyro_vae.training.checkpoint import store
from pyro_vae.training.checkpoint.resume import load_run_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "32", "--z-dim", "2", "--no-progress", "--threads", "1"]


def final_state(run: Path) -> tuple[dict, list[dict]]:
    checkpoint = store.load(run / "checkpoint.pt")
    metrics = files.read_jsonl(run / "metrics.jsonl")
    return checkpoint.model_state, metrics


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical parameters and identical metrics (all but the timings)."""
    (state_a, metrics_a), (state_b, metrics_b) = final_state(a), final_state(b)
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    timing = {"seconds", "images_per_second"}
    assert [{k: v for k, v in m.items() if k not in timing} for m in metrics_a] == [
        {k: v for k, v in m.items() if k not in timing} for m in metrics_b
    ]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """4 epochs without a stop: the run every resumed one must reproduce."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(SMALL + ["--epochs", "4", "--out", str(out)]) == 0
    return out


def test_two_epochs_then_resume_equals_four_straight(tmp_path, straight_run):
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "2", "--out", str(out)]) == 0
    assert main(["--resume", str(out), "--epochs", "4", "--no-progress"]) == 0
    assert_same_run(straight_run, out)
    assert json.loads((out / "config.json").read_text())["epochs"] == 4


def test_local_guide_resumes_exactly(tmp_path):
    """The local guide's per-point table and its SparseAdam state come back from the checkpoint: one epoch
    and a resume give the same parameters and metrics as two epochs straight."""
    local = SMALL + ["--guide", "local", "--local-points", "300", "--batch-size", "64"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(local + ["--epochs", "2", "--out", str(straight)]) == 0
    assert main(local + ["--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["--resume", str(resumed), "--epochs", "2", "--no-progress"]) == 0
    assert_same_run(straight, resumed)
    assert store.load(resumed / "checkpoint.pt").local_optimizer_state is not None


def test_resume_refuses_changed_settings_and_names_them(tmp_path, capsys, straight_run):
    assert main(["--resume", str(straight_run), "--z-dim", "3", "--estimator", "meanfield"]) == 2
    err = capsys.readouterr().err
    assert "--z-dim (run: 2, given: 3)" in err and "--estimator (run: 'trace', given: 'meanfield')" in err
    assert main(["--resume", str(tmp_path)]) == 2
    assert f"cannot resume {tmp_path}: not a run folder" in capsys.readouterr().err
    assert main(["--resume", str(straight_run), "--out", str(tmp_path)]) == 2
    assert "leave out --out" in capsys.readouterr().err


def spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "scripts/svi_train.py", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_sigkill_at_random_moments_always_leaves_a_loadable_checkpoint(tmp_path, straight_run):
    """Killed three times at random moments after its first checkpoint, the run always has a loadable
    checkpoint, and resuming completes it with exactly the straight run's result."""
    out = tmp_path / "run"
    rng = random.Random(0)
    process = spawn(SMALL + ["--epochs", "4", "--out", str(out)])
    for _ in range(3):
        wait_for(out / "checkpoint.pt", process)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        load_run_checkpoint(out)  # raises if it cannot be loaded
        if (out / "summary.json").exists():
            break
        process = spawn(["--resume", str(out), "--no-progress"])
    else:
        process.wait(timeout=300)
    if not (out / "summary.json").exists():
        assert main(["--resume", str(out), "--no-progress"]) == 0
    assert_same_run(straight_run, out)
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def test_ctrl_c_writes_a_checkpoint_and_resume_is_exact(tmp_path):
    """SIGINT mid-run stops between two steps after a checkpoint, says how to resume, and the resumed
    run ends exactly where an uninterrupted one does."""
    args = ["--hidden", "400", "--z-dim", "4", "--no-progress", "--threads", "1", "--epochs", "6"]
    out = tmp_path / "stopped"
    process = spawn(args + ["--out", str(out)])
    wait_for(out / "metrics.jsonl", process)
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"Resume with: python scripts/svi_train.py --resume {out}" in err
    assert not (out / "summary.json").exists()
    assert main(["--resume", str(out), "--no-progress"]) == 0
    assert main(args + ["--out", str(tmp_path / "straight")]) == 0
    assert_same_run(tmp_path / "straight", out)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_scheduler_s_sigterm_or_a_hangup_stops_like_ctrl_c(tmp_path, stop):
    """SIGTERM (a cluster's preemption notice) and SIGHUP (a closed terminal) mid-run: a checkpoint, one line
    naming the signal with the resume command, exit status 128 + the signal; the run then resumes to its end."""
    out = tmp_path / "run"
    process = spawn(SMALL + ["--epochs", "100", "--out", str(out)])
    wait_for(out / "metrics.jsonl", process)
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, err
    assert f"interrupted ({signal.Signals(stop).name})" in err and f"--resume {out}" in err
    assert "Traceback" not in err and not (out / "summary.json").exists()
    stopped_at = load_run_checkpoint(out).progress.epoch
    assert main(["--resume", str(out), "--epochs", str(stopped_at + 1), "--no-progress"]) == 0


def poisoned_loss(bad_step: int):
    """Wrap the training loss so that step `bad_step` returns NaN."""
    real = objective_module.ELBOLoss

    def build(vae, elbo, validate_every_step=False):
        loss, calls = real(vae, elbo, validate_every_step), [0]

        def wrapped(x, kl_weight, index=None):
            calls[0] += 1
            value = loss(x, kl_weight, index)
            return value * float("nan") if calls[0] == bad_step else value

        return wrapped

    return build


@pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")  # the NaN is the test's own
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(objective_module, "ELBOLoss", poisoned_loss(bad_step=20))  # in epoch 2 of 16 steps
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite at step 20" in err and "estimator trace" in err and "--lr" in err
    checkpoint = load_run_checkpoint(out)
    assert checkpoint.progress.epoch == 1 and all(torch.isfinite(v).all() for v in checkpoint.model_state.values())
    assert not (out / "summary.json").exists()


@pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")  # the NaN is the test's own
def test_nonfinite_steps_can_be_skipped_and_are_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(objective_module, "ELBOLoss", poisoned_loss(bad_step=20))
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "2", "--on-nonfinite", "skip", "--out", str(out)]) == 0
    _, metrics = final_state(out)
    assert [m["skipped_steps"] for m in metrics] == [0, 1]
    assert all(torch.isfinite(torch.tensor(m["train_loss"])) for m in metrics)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _Exploit.marker = tmp_path / "pwned"
    torch.save({"format_version": 1, "payload": _Exploit()}, run / "checkpoint.pt")
    with pytest.raises(ConfigError, match="holds objects other than tensors and plain containers"):
        load_run_checkpoint(run)
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "nothing in it ran" in err and "weights_only=False" not in err
    assert not _Exploit.marker.exists()


def test_json_lines_read_back_as_written_and_appended(tmp_path):
    """read_jsonl gives back write_jsonl's records, then append_jsonl's, in order (metrics.jsonl's round trip)."""
    path = tmp_path / "metrics.jsonl"
    files.write_jsonl(path, [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": float("inf")}])
    files.append_jsonl(path, {"epoch": 3, "note": 'a "quoted" line'})
    assert files.read_jsonl(path) == [
        {"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": float("inf")}, {"epoch": 3, "note": 'a "quoted" line'},
    ]  # fmt: skip


def test_resume_removes_the_temporary_file_of_an_interrupted_write(tmp_path):
    """A kill during a checkpoint's write leaves .checkpoint.pt.<random>.tmp beside the intact old file;
    the next start removes it."""
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "1", "--out", str(out)]) == 0
    stale = out / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert not stale.exists() and load_run_checkpoint(out).progress.epoch == 2


@pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")  # the NaN is the test's own
def test_the_stop_message_says_no_checkpoint_exists_yet_and_names_the_rate_in_force(tmp_path, capsys, monkeypatch):
    """A NaN in epoch 1 (16 steps) comes before the first checkpoint; with --lr-final the rate in force is
    not --lr."""
    original = objective_module.ELBOLoss
    monkeypatch.setattr(objective_module, "ELBOLoss", poisoned_loss(bad_step=5))
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "3", "--lr", "1e-3", "--lr-final", "1e-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint had been written yet" in err and "holds the last good state" not in err
    assert "--lr 0.001" in err and not (out / "checkpoint.pt").exists()
    monkeypatch.setattr(objective_module, "ELBOLoss", original)  # poisoned_loss wraps what is there
    monkeypatch.setattr(objective_module, "ELBOLoss", poisoned_loss(bad_step=40))  # epoch 3, lr 1e-1
    assert main(SMALL + ["--epochs", "3", "--lr", "1e-3", "--lr-final", "1e-1", "--out", str(tmp_path / "late")]) == 2
    assert "0.1 in force this epoch: --lr 0.001 on its schedule" in capsys.readouterr().err


def test_skip_mode_never_checkpoints_a_model_whose_test_loss_is_not_finite(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "1", "--on-nonfinite", "skip", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    real = run_module.Run.check_finite
    monkeypatch.setattr(run_module.Run, "check_finite", lambda self, loss: real(self, float("nan")))
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not finite, so it is not checkpointed" in err and "holds the last good state" in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    import pyro_vae.files as files_module

    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "1", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files_module.os, "fsync", full)
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "No space left on device" in line and "last complete checkpoint" in line and "Traceback" not in err
    assert (out / "checkpoint.pt").read_bytes() == before and not list(out.glob(".*.tmp"))


def test_a_run_folder_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    from pyro_vae.distributed import SINGLE
    from pyro_vae.training.report.folder import RunFolder

    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "1", "--out", str(out)]) == 0
    holder = RunFolder(out)
    holder.claim(SINGLE)  # as a training process holds it
    stale = out / ".checkpoint.pt.abc.tmp"  # the holder's write in progress
    stale.write_bytes(b"partial")
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is in use" in err and f"pid {os.getpid()}" in err and stale.exists()
    holder.close()
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 0


def test_ctrl_c_outside_the_training_loop_and_a_second_ctrl_c_say_what_happened(tmp_path, capsys, monkeypatch):
    train_module = importlib.import_module("pyro_vae.training.loop")

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "load_training_data", pressed)  # Ctrl-C while the data loads
    assert main(SMALL + ["--epochs", "1", "--out", str(tmp_path / "a")]) == 130
    err = capsys.readouterr().err
    assert "while not training" in err and "second Ctrl-C" not in err and "Traceback" not in err
    monkeypatch.undo()

    def pressed_twice(*args, **kwargs):
        raise train_module.Abandoned

    monkeypatch.setattr(train_module, "train_epoch", pressed_twice)
    assert main(SMALL + ["--epochs", "1", "--out", str(tmp_path / "b")]) == 130
    assert "interrupted at once (second Ctrl-C)" in capsys.readouterr().err


def test_a_resume_whose_checkpoint_changed_before_it_took_the_lock_is_refused(tmp_path):
    """A resume reads the checkpoint, then claims the folder; if another process trained the run further in
    between (and let go of the lock), the resume stops in one line instead of retraining from a stale epoch."""
    from dataclasses import replace

    import pyro_vae
    from pyro_vae.training.checkpoint.resume import resumed_config

    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "1", "--out", str(out)]) == 0
    stale = load_run_checkpoint(out)
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 0  # the other process
    config = replace(resumed_config(stale, {"epochs": 3}), out=str(out))
    with pytest.raises(ConfigError, match="changed while this resume started"):
        pyro_vae.train(config, progress=False, checkpoint=stale)
    assert len(load_run_checkpoint(out).progress.metrics) == 2  # nothing rewritten


COMMANDS = ["pyro-vae-train", "pyro-vae-evaluate", "pyro-vae-sample"]  # installed beside this Python


def wait_until_pytorch_loads(process: subprocess.Popen, limit: float = 30.0) -> None:
    """Until `process` has mapped PyTorch's first native library (libc10: it is importing torch), where /proc
    shows it (Linux). Without this wait, on a busy machine a fixed delay can end while Python itself is still
    starting (importing `site`, before any line of the command runs), where no handler can be set yet and
    Python exits 1 with "Fatal Python error: init_import_site"."""
    maps, deadline = Path(f"/proc/{process.pid}/maps"), time.monotonic() + limit
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if "libc10" in maps.read_text():
                return
        except OSError:  # no /proc here, or the process is gone
            return
        time.sleep(0.002)


@pytest.mark.parametrize(
    "script, delay",
    [(script, 0.3) for script in ("svi_train", "evaluate", "sample", "beta_sweep", "compare_estimators")]
    + [(command, delay) for command in COMMANDS for delay in (0.1, 0.3)],
)
def test_ctrl_c_while_a_command_imports_torch_exits_in_one_line_not_natively(script, delay, tmp_path):
    """SIGINT while PyTorch is still being imported, by a script or an installed command: one line and exit
    130, never a traceback or the native abort (`terminate called ...`, exit -6) of a KeyboardInterrupt raised
    inside an extension's init."""
    root = Path(__file__).resolve().parents[1]
    if script in COMMANDS and not (Path(sys.executable).parent / script).exists():
        pytest.skip(f"{script} is not installed beside {sys.executable}")
    command = (
        [str(Path(sys.executable).parent / script)] if script in COMMANDS else [sys.executable, f"scripts/{script}.py"]
    )
    process = subprocess.Popen(
        [*command, "--help"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until_pytorch_loads(process)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the imports finished before the signal came")
    assert process.returncode == 130 and "terminate called" not in err and "Traceback" not in err
    assert err == "interrupted (Ctrl-C) while starting up; nothing was written\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_stdout_or_stderr_is_one_line_never_a_traceback_and_training_goes_on(tmp_path):
    """stdout (and stderr) on a full disk: training goes on without its lines (every number is in the run
    folder), and a command whose results cannot be printed says so in one line on stderr, exit 2."""
    root = Path(__file__).resolve().parents[1]
    tiny = ["--hidden", "8", "--z-dim", "2", "--epochs", "1", "--no-progress", "--threads", "1"]

    def run(args: list[str], stderr_full: bool = False) -> subprocess.CompletedProcess:
        with open("/dev/full", "w") as full:
            return subprocess.run(
                [sys.executable, *args], cwd=root, stdout=full, stderr=full if stderr_full else subprocess.PIPE,
                text=True, timeout=300,
            )  # fmt: skip

    trained = run(["scripts/svi_train.py", *tiny, "--out", str(tmp_path / "run")], stderr_full=True)
    assert trained.returncode == 0 and (tmp_path / "run" / "summary.json").exists()
    pictures = run(["scripts/sample.py", str(tmp_path / "run"), "--prior", "4"])
    assert pictures.returncode == 2 and "Traceback" not in pictures.stderr
    assert pictures.stderr == (
        "error: cannot write the command's output (No space left on device); the files it wrote are kept\n"
    )
    assert (tmp_path / "run" / "samples" / "prior-seed0.png").exists()
