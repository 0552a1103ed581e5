"""Data-parallel training under torchrun, with 2 CPU processes (gloo): the engine's step, evaluation,
checkpoints, resume and failures, each against one process or an uninterrupted run."""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import rtol_for
from test_programs import DATA, program_parts
from test_reliability import assert_same_run, final_state, wait_for
from two_rank_probe import BATCH, CONFIG, EVAL, SEED, binary_batch

import pyro_vae
from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.train import main
from pyro_vae.distributed import SINGLE
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.training.build import build_run
from pyro_vae.training.checkpoint.resume import load_run_checkpoint
from pyro_vae.training.run import weights_digest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "32", "--z-dim", "2", "--no-progress", "--threads", "1"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(args: list[str], script: str = "scripts/svi_train.py", **popen) -> subprocess.Popen:
    return subprocess.Popen(
        TORCHRUN + [script, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        **popen,
    )


def finished(process: subprocess.Popen, timeout: float = 240) -> str:
    """The job's stderr, after asserting that it succeeded."""
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return err


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """3 epochs on 2 processes without a stop."""
    out = tmp_path_factory.mktemp("ddp") / "straight"
    assert "2 processes" in finished(torchrun(SMALL + ["--epochs", "3", "--out", str(out)]))
    return out


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("probe")
    finished(torchrun([str(out)], script="tests/two_rank_probe.py"))
    return json.loads((out / "probe.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The probe's run built by one process: the same initial weights."""
    return build_run(
        replace(CONFIG, out=str(tmp_path_factory.mktemp("reference") / "run")), SINGLE, log=lambda line: None
    )


def test_averaged_gradient_is_the_whole_batch_gradient(probe, reference):
    """Two ranks with 4 and 3 of a batch of 7: DDP's average of their weighted gradients equals the gradient
    of the mean loss over all 7 images with the same noise (float32: within a few hundred ulps)."""
    total = 0.0
    for rank, rows in enumerate(torch.arange(BATCH).tensor_split(2)):
        torch.manual_seed(SEED + rank)
        total = total + len(rows) * reference.objective.loss(binary_batch(reference.dataset, rows), 1.0)
    grads = torch.autograd.grad(total / BATCH, [p for p in reference.vae.parameters() if p.requires_grad])
    assert probe["shard"] == 4
    for mine, expected in zip(probe["grads"], grads):
        scale = expected.abs().max().item()
        assert torch.allclose(torch.tensor(mine), expected, rtol=0, atol=rtol_for(torch.float32) * scale)


def test_sharded_evaluation_equals_one_process(probe, reference):
    """log p(x) and the negative ELBO computed in shares by two ranks are the single process's, exactly."""
    x = reference.dataset.test[: EVAL["images"]]
    single = evaluate.log_likelihood(reference.vae, x, EVAL["samples"], max_rows=EVAL["max_rows"])
    assert probe["per_image"] == single.per_image.tolist()
    assert (probe["log_px"], probe["standard_error"]) == (single.value, single.standard_error)
    assert probe["negative_elbo"] == evaluate.negative_elbo(
        reference.vae, x, EVAL["elbo_samples"], chunk_size=EVAL["chunk_size"]
    )


def test_ranks_with_different_weights_are_never_checkpointed(probe):
    assert probe["digest_check_passes"]
    assert "weights differ" in probe["desync_error"] and "nothing is checkpointed" in probe["desync_error"]


def test_resume_under_torchrun_is_exact(tmp_path, straight):
    out = tmp_path / "run"
    finished(torchrun(SMALL + ["--epochs", "2", "--out", str(out)]))
    err = finished(torchrun(["--resume", str(out), "--epochs", "3", "--no-progress"]))
    assert "resuming at epoch 3" in err
    assert_same_run(straight, out)
    checkpoint = load_run_checkpoint(out)
    assert checkpoint.world_size == 2 and len(checkpoint.rng_other_ranks) == 1


def test_resume_with_another_number_of_processes_says_what_is_not_exact(tmp_path, capsys):
    out = tmp_path / "run"
    finished(torchrun(SMALL + ["--epochs", "1", "--out", str(out)]))
    assert main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "trained by 2 process(es) and resumes with 1" in err and "not bit-identical" in err
    assert [m["epoch"] for m in final_state(out)[1]] == [1, 2]


def test_two_processes_reach_the_test_loss_of_one_within_monte_carlo_noise(tmp_path, straight):
    """The same global batch on 1 and on 2 processes, 4 seeds each: the mean final test loss agrees within
    5 standard errors of the difference (the seeds' spread)."""

    def final_loss(run: Path) -> float:
        return final_state(run)[1][-1]["test_loss"]

    one, two = [], [final_loss(straight)]
    for seed in range(4):
        assert main(SMALL + ["--epochs", "3", "--seed", str(seed), "--out", str(tmp_path / f"one-{seed}")]) == 0
        one.append(final_loss(tmp_path / f"one-{seed}"))
    for seed in range(1, 4):
        finished(torchrun(SMALL + ["--epochs", "3", "--seed", str(seed), "--out", str(tmp_path / f"two-{seed}")]))
        two.append(final_loss(tmp_path / f"two-{seed}"))
    standard_error = math.sqrt(statistics.variance(one) / len(one) + statistics.variance(two) / len(two))
    assert abs(statistics.mean(one) - statistics.mean(two)) < 5 * standard_error, (one, two)


def rank_pid(out: Path, rank: int) -> int:
    """The process id of rank `rank` of the job writing `out`."""
    for proc in Path("/proc").iterdir():
        try:
            if str(out) in (proc / "cmdline").read_text() and f"RANK={rank}" in (proc / "environ").read_text().split(
                "\0"
            ):
                return int(proc.name)
        except (OSError, ValueError):
            continue
    raise AssertionError(f"no rank {rank} found")


def test_a_rank_that_dies_takes_the_job_down_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    process = torchrun(SMALL + ["--epochs", "200", "--out", str(out)])
    wait_for(out / "checkpoint.pt", process)
    os.kill(rank_pid(out, 1), signal.SIGKILL)
    _, err = process.communicate(timeout=60)  # no hang
    assert process.returncode != 0
    assert "lost the other processes of the job" in err and "--resume" in err
    assert load_run_checkpoint(out).progress.epoch >= 1


def test_ctrl_c_under_torchrun_checkpoints_every_rank_at_the_same_step(tmp_path, straight):
    """Ctrl-C reaches torchrun and both workers (one process group): the ranks agree where to stop, rank 0
    writes the checkpoint and says how to resume, and resuming completes the run exactly."""
    out = tmp_path / "run"
    process = torchrun(SMALL + ["--epochs", "3", "--out", str(out)], start_new_session=True)
    wait_for(out / "metrics.jsonl", process)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    if (out / "summary.json").exists():
        pytest.skip("the run finished before Ctrl-C arrived")
    assert f"Resume with: torchrun --nproc-per-node 2 scripts/svi_train.py --resume {out}" in err
    finished(torchrun(["--resume", str(out), "--no-progress"]))
    assert_same_run(straight, out)


def test_evaluate_under_torchrun_gives_the_single_process_numbers(straight):
    """scripts/evaluate.py shares the images over 2 ranks; rank 0 writes the same figures one process does."""
    assert evaluate_main([str(straight), "--samples", "40", "--threads", "1"]) == 0
    single = json.loads((straight / "evaluation-epoch3-K40.json").read_text())
    finished(torchrun([str(straight), "--samples", "40", "--threads", "1"], script="scripts/evaluate.py"))
    shared = json.loads((straight / "evaluation-epoch3-K40.json").read_text())
    assert shared["processes"] == 2
    timing = {"seconds", "processes"}
    assert {k: v for k, v in shared.items() if k not in timing} == {k: v for k, v in single.items() if k not in timing}


def test_ranks_orphaned_by_a_sigkill_of_torchrun_stop_within_seconds_and_release_the_run(tmp_path):
    """SIGKILL of torchrun itself: its ranks get SIGTERM from the kernel (a parent-death signal), stop at an
    agreed step with a checkpoint, and exit; the run resumes at once, not after the 30-minute timeout."""
    out = tmp_path / "run"
    process = torchrun(SMALL + ["--epochs", "200", "--out", str(out)])
    wait_for(out / "checkpoint.pt", process)
    ranks = [rank_pid(out, rank) for rank in (0, 1)]
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and "Z" not in state_of(pid) for pid in ranks):
        assert time.monotonic() < deadline, "orphaned ranks still running after 30 s"
        time.sleep(0.2)
    epoch = load_run_checkpoint(out).progress.epoch
    assert main(["--resume", str(out), "--epochs", str(epoch + 1), "--no-progress", "--threads", "1"]) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_rank_whose_torchrun_died_before_it_asked_for_the_parent_death_signal_stops_at_once():
    """torchrun SIGKILLed while its ranks still import PyTorch: a rank's parent is then no torchrun process
    (init, or a subreaper) by the time it asks for the signal; it stops by itself instead of waiting out the
    30-minute rendezvous. Under another launcher (no TORCHELASTIC_RUN_ID) an unchanged parent is kept."""
    probe = "from pyro_vae.distributed import stop_with_parent; stop_with_parent(); import time; time.sleep(60)"
    for environment, stops in (({"TORCHELASTIC_RUN_ID": "orphan"}, True), ({}, False)):
        env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_RUN_ID"} | environment
        process = subprocess.Popen([sys.executable, "-c", probe], env=env)
        try:
            code = process.wait(timeout=20 if stops else 3)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            process.kill()
            process.wait()
        assert (code == -signal.SIGTERM) if stops else code is None, (environment, code)


def state_of(pid: int) -> str:
    """The process's state letter from /proc (Z: a zombie, gone but not yet reaped), or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def test_ddp_is_told_not_to_sync_buffers_each_forward_in_the_words_this_pytorch_knows(monkeypatch):
    """forward_sync_buffers where DistributedDataParallel has it; broadcast_buffers on a PyTorch without it
    (2.11, the lent GPU machine's, refused the newer keyword and every torchrun run with it)."""
    from pyro_vae.training import objective

    class OlderDDP:
        def __init__(self, module, device_ids=None, broadcast_buffers=True):
            pass

    assert objective.no_buffer_sync_each_forward().keys() <= set(
        inspect.signature(objective.DistributedDataParallel.__init__).parameters
    )
    monkeypatch.setattr(objective, "DistributedDataParallel", OlderDDP)
    assert objective.no_buffer_sync_each_forward() == {"broadcast_buffers": False}


def test_a_users_program_trains_and_resumes_exactly_under_torchrun(tmp_path):
    """The three-site program of tests/test_programs.py on two ranks: 2 epochs straight, and 1 then resumed to 2,
    end at bit-identical weights (every checkpoint also checks that the ranks' weights agree)."""
    for out, epochs in ((tmp_path / "straight", [2]), (tmp_path / "resumed", [1, 2])):
        for count in epochs:
            finished(torchrun([str(out), str(count)], script="tests/two_rank_program.py"))
    straight = pyro_vae.load_run(tmp_path / "straight", data=DATA, **program_parts(modules=True))
    resumed = pyro_vae.load_run(tmp_path / "resumed", data=DATA, **program_parts(modules=True))
    assert straight.metrics[-1]["epoch"] == 2 and json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert weights_digest(straight.vae) == weights_digest(resumed.vae)
