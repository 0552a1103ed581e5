"""The default thread count: the free cores, shared among torchrun's processes on the machine."""

from __future__ import annotations

import json
import os

import pytest
import torch

from pyro_vae import threads


@pytest.fixture(autouse=True)
def torch_threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "cores, busy, local_world, expected",
    [(2, 0.0, None, 2), (2, 1.2, None, 1), (2, 2.0, None, 1), (8, 0.4, None, 8), (8, 2.6, "2", 2), (2, 0.0, "4", 1)],
)
def test_the_default_is_the_free_cores_shared_among_local_processes(monkeypatch, cores, busy, local_world, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    assert threads.default_threads() == expected


def test_busy_cores_reads_the_machine_and_an_explicit_count_wins(monkeypatch):
    busy = threads.busy_cores(interval=0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-9
    assert threads.use_threads(1) == 1 and torch.get_num_threads() == 1


def test_without_proc_stat_the_load_average_stands_in(monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "missing")
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.5, 0.0, 0.0))
    assert threads.busy_cores(interval=0.0) == 1.5


def test_a_run_records_the_threads_it_chose_and_its_resume_keeps_them(monkeypatch, tmp_path):
    import pyro_vae

    monkeypatch.setattr(threads, "default_threads", lambda: 1)
    lines = []
    config = pyro_vae.TrainConfig(model=pyro_vae.ModelConfig(hidden=(16,), z_dim=2), epochs=1, out=str(tmp_path / "r"))
    pyro_vae.train(config, progress=False, log=lines.append)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["threads"] == 1
    assert "on cpu, 1 CPU thread;" in lines[0]
    monkeypatch.setattr(threads, "default_threads", lambda: 2)  # the machine got quieter: the run keeps its 1
    pyro_vae.resume(tmp_path / "r", epochs=2, progress=False, log=lines.append)
    (resumed,) = [line for line in lines if line.startswith("resuming")]
    assert "on cpu, 1 CPU thread;" in resumed
