"""pyro_vae.lightning.VAEModule: the engine's step under lightning.Trainer, against the engine's own loop."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_programs import DATA, program_parts

import pyro_vae
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.run import weights_digest

CONFIG = TrainConfig(epochs=2, batch_size=100, threads=1, model=ModelConfig(hidden=(32,), z_dim=2))
ROOT = Path(__file__).resolve().parents[1]

lightning = pytest.importorskip("lightning", reason="the lightning extra is not installed")
VAEModule = pytest.importorskip("pyro_vae.lightning").VAEModule


def fit(module: VAEModule, tmp_path: Path, epochs: int = CONFIG.epochs) -> list[dict]:
    """Train with lightning.Trainer on the CPU; the epochs' logged metrics (Lightning's CSVLogger), as floats."""
    logger = lightning.pytorch.loggers.CSVLogger(str(tmp_path), name="lightning")
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module)
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    names = rows[0].split(",")
    records = [dict(zip(names, row.split(","))) for row in rows[1:]]
    return [{k: float(v) for k, v in r.items() if v} for r in records if r.get("test_loss")]


def engine(config: TrainConfig, tmp_path: Path, **parts) -> pyro_vae.TrainedRun:
    return pyro_vae.train(replace(config, out=str(tmp_path / "engine")), progress=False, log=lambda line: None, **parts)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return weights_digest(a) == weights_digest(b)


def test_lightning_trains_the_built_in_vae_exactly_as_the_engines_loop(tmp_path):
    """Same config and seed: the engine's batches, binarization and noise, so bit-identical weights after two
    epochs, and per epoch the same train loss (Lightning's mean, in float32) and test loss and its terms."""
    run = engine(CONFIG, tmp_path)
    module = VAEModule(CONFIG)
    logged = fit(module, tmp_path)
    assert same_weights(run.vae, module.vae)
    assert len(logged) == CONFIG.epochs
    for mine, theirs in zip(logged, run.metrics):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-6)  # float32 running mean
        for key in ("test_loss", "test_reconstruction", "test_kl"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6)  # logged as float32


def test_lightning_trains_a_users_program_exactly_as_the_engines_loop(tmp_path):
    """The three-site Pyro program of tests/test_programs.py (functions with pyro.module and pyro.param)."""
    config = TrainConfig(epochs=2, batch_size=32, threads=1)
    run = engine(config, tmp_path, data=DATA, **program_parts())
    module = VAEModule(config, data=DATA, **program_parts())
    logged = fit(module, tmp_path)
    assert same_weights(run.vae, module.vae)
    assert logged[-1]["test_loss"] == pytest.approx(run.metrics[-1]["test_loss"], rel=1e-6)


def test_two_ddp_processes_under_lightning_equal_the_engine_under_torchrun(tmp_path):
    """Trainer(strategy="ddp", devices=2) on the CPU (gloo), and the engine's own loop under torchrun on two
    processes, from the same config: the ranks agree, and both end at the same weights bit for bit."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "two_rank_lightning.py"), str(tmp_path)],
        cwd=ROOT / "tests", env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["steps"] == CONFIG.epochs * 40  # 4,000 default training images, batches of 100
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in ranks[0]["weights"])
    script = tmp_path / "engine.py"
    script.write_text(
        "import sys\nfrom dataclasses import replace\nimport pyro_vae\nfrom test_lightning import CONFIG\n"
        "pyro_vae.train(replace(CONFIG, out=sys.argv[1]), progress=False, log=lambda line: None)\n"
    )
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(script),
         str(tmp_path / "engine")],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    torchrun_run = pyro_vae.load_run(tmp_path / "engine")
    weights = torchrun_run.vae.state_dict()
    assert all(torch.equal(ranks[0]["weights"][k], weights[k]) for k in weights)
    assert ranks[0]["metrics"]["test_loss"] == pytest.approx(torchrun_run.metrics[-1]["test_loss"], rel=1e-6)


@pytest.mark.parametrize(
    "config, message",
    [
        (replace(CONFIG, compile=True), "compile is the engine's own loop's"),
        (replace(CONFIG, model=replace(CONFIG.model, guide="local")), "guide local keeps per-image parameters"),
        (replace(CONFIG, validation=500, patience=3), "use its EarlyStopping callback"),
        ("not a config", "VAEModule needs a TrainConfig, got str"),
    ],
)
def test_what_lightning_cannot_do_is_refused_in_one_line(config, message):
    with pytest.raises((ConfigError, TypeError), match=message) as raised:
        VAEModule(config)
    assert "\n" not in str(raised.value)


def test_the_documented_lightning_example_runs_and_the_page_shows_its_code(tmp_path):
    """docs/examples/lightning_trainer.py for two epochs; every line of the page's Python block is in it."""
    script, page = ROOT / "docs" / "examples" / "lightning_trainer.py", (ROOT / "docs" / "lightning.md").read_text()
    source = script.read_text()
    block = page.split("```python\n", 1)[1].split("```", 1)[0]
    assert all(line.strip() in source for line in block.splitlines())
    done = subprocess.run(
        [sys.executable, str(script), "--epochs", "2", "--out", str(tmp_path / "lightning")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test negative ELBO" in done.stdout and "after 2 epochs" in done.stdout


def test_without_the_extra_the_import_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)  # as if lightning were not installed
    monkeypatch.delitem(sys.modules, "pyro_vae.lightning")
    with pytest.raises(
        ImportError, match=r'^pyro_vae.lightning needs the lightning extra: pip install -e "\.\[lightning\]"'
    ):
        import pyro_vae.lightning  # noqa: F401
