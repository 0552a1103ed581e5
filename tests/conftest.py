"""Shared fixtures: the devices to test on, float tolerances per dtype, and the real-data folder; under
pytest-xdist (`-n auto`, set in pyproject.toml) each worker gets its share of the cores as torch threads."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from pyro_vae import threads
from pyro_vae.data import DATA_DIR_ENV
from pyro_vae.memory import available_bytes

CUDA = torch.cuda.is_available()
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # workers x threads = cores, not workers x cores
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
WORKER_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def steady_default_threads(request, monkeypatch):
    """A run that sets no thread count takes the cores free at its start (`threads.default_threads`), which on
    a busy machine differ from one start to the next, and two runs on different counts round their sums
    differently: a test comparing a run with its resume bit for bit would fail now and then. In this process
    every run without a count takes the worker's share instead; tests/test_threads.py tests the real one."""
    if request.module.__name__.split(".")[-1] != "test_threads":
        monkeypatch.setattr(threads, "default_threads", lambda: WORKER_THREADS)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA GPU"))])
def device(request) -> torch.device:
    """Every device-parametrized test runs on the CPU, and on CUDA where a GPU exists (recorded in the
    test's report, which xdist's workers send to the summary below)."""
    request.node.user_properties.append(("device", request.param))
    return torch.device(request.param)


@pytest.fixture
def dtype(device) -> torch.dtype:
    """float64 on the CPU (tight checks); float32 on CUDA, the precision GPUs train in."""
    return torch.float64 if device.type == "cpu" else torch.float32


def rtol_for(dtype: torch.dtype) -> float:
    """Relative tolerance of an exact identity: 1e-10 in float64; in float32 a few hundred ulps
    (eps = 1.2e-7) for sums over hundreds of terms."""
    return 1e-10 if dtype == torch.float64 else 1e-4


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST-family data ($PYRO_VAE_DATA, set by .ci/run when ../shared/data exists)."""
    path = os.environ.get(DATA_DIR_ENV)
    if not path or not (Path(path) / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not available: set ${DATA_DIR_ENV} to a folder holding MNIST/raw")
    return Path(path)


def trained_2d_vae(steps: int, images: int):
    """`fits.train_2d_vae(steps)` and the first `images` binarized default test images (float64)."""
    from pyro_vae import data
    from pyro_vae.training import fits

    return fits.train_2d_vae(steps), data.prepare(data.load_dataset("default"), "dynamic").test[:images].double()


@pytest.fixture(scope="session", autouse=True)
def checkout_runs_untouched():
    """The tests write only into temporary folders: nothing new appears in the checkout's runs/."""
    runs = Path(__file__).resolve().parents[1] / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    yield
    after = set(runs.iterdir()) if runs.is_dir() else set()
    assert after <= before, f"the tests wrote into {runs}: {sorted(map(str, after - before))}"


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: a worker a core, at most 8 and one per 2 GiB of available memory (each worker holds PyTorch,
    Pyro and a few models; some tests start subprocesses of their own)."""
    return max(1, min(os.cpu_count() or 1, 8, available_bytes() // 2**31))


def pytest_report_header(config) -> str:
    name = torch.cuda.get_device_name(0) if CUDA else "none"
    return f"pyro-vae devices: cpu, cuda={'yes' if CUDA else 'no'} (GPU: {name}); torch {torch.__version__}"


def pytest_terminal_summary(terminalreporter) -> None:
    counts = Counter(
        value
        for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "device"
    )
    uses = ", ".join(f"{d}: {n} tests" for d, n in sorted(counts.items())) or "none"
    terminalreporter.write_line(f"device-parametrized tests ran on: {uses}" + ("" if CUDA else " (no CUDA GPU here)"))
