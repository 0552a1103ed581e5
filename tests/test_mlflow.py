"""--mlflow: a run's records in an MLflow tracking store, read back with MLflow's own client."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

import pyro_vae
from pyro_vae import files
from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.train import build_parser, main
from pyro_vae.errors import ConfigError
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.report import mlflow_log

mlflow_tracking = pytest.importorskip("mlflow.tracking", reason="the mlflow extra is not installed")

SMALL = ["--hidden", "32", "--z-dim", "2", "--no-progress", "--threads", "1"]


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def mlflow_run(out: Path):
    """The MLflow run of run folder `out` and its client, from RUN/mlflow.json."""
    record = json.loads((out / "mlflow.json").read_text())
    client = mlflow_tracking.MlflowClient(record["tracking_uri"])
    return client, client.get_run(record["run_id"])


def history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    """Two epochs logged to a fresh SQLite store, then resumed to three, then evaluated."""
    tmp = tmp_path_factory.mktemp("mlflow")
    out = tmp / "run"
    assert main(SMALL + ["--epochs", "2", "--mlflow", store(tmp), "--out", str(out)]) == 0
    assert main(["--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert evaluate_main([str(out), "--samples", "20", "--images", "50", "--threads", "1"]) == 0
    return out


def test_the_config_metrics_figures_and_folder_reach_mlflow(logged):
    client, run = mlflow_run(logged)
    config = json.loads((logged / "config.json").read_text())
    assert run.data.params["lr"] == str(config["lr"]) and run.data.params["model.z_dim"] == "2"
    assert run.data.params["model.hidden"] == "[32]"
    assert run.data.tags[mlflow_log.FOLDER_TAG] == str(logged.resolve())
    metrics = files.read_jsonl(logged / "metrics.jsonl")
    for key in ("train_loss", "test_loss", "test_kl", "lr", "kl_weight"):
        assert history(client, run, key) == [(m["epoch"], m[key]) for m in metrics]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "summary.json", "loss_curve.png", "samples.png", "reconstructions.png"} <= artifacts
    assert run.info.status == "FINISHED"
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(logged.parent)  # beside the store


def test_a_resumed_run_continues_its_mlflow_run(logged):
    client, run = mlflow_run(logged)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "pyro-vae"
    assert len(client.search_runs([experiment.experiment_id])) == 1  # resumed, not a second run
    assert [step for step, _ in history(client, run, "test_loss")] == [1, 2, 3]


def test_an_evaluation_reaches_the_runs_mlflow_run(logged):
    client, run = mlflow_run(logged)
    saved = json.loads((logged / "evaluation-epoch3-K20.json").read_text())
    assert history(client, run, "evaluation/test_log_likelihood") == [(3, saved["test_log_likelihood"])]
    assert "evaluation-epoch3-K20.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_stopped_run_is_killed_and_a_resume_into_another_store_logs_its_history_first(tmp_path, monkeypatch):
    loop = importlib.import_module("pyro_vae.training.loop")
    real, calls = loop.train_epoch, []

    def stopped_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise loop.Abandoned
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", stopped_in_the_second_epoch)
    out, first = tmp_path / "run", store(tmp_path / "first")
    (tmp_path / "first").mkdir()
    config = TrainConfig(epochs=3, out=str(out), mlflow=first, threads=1)
    with pytest.raises(loop.Abandoned):
        pyro_vae.train(config, progress=False, log=lambda line: None)
    client, run = mlflow_run(out)
    assert run.info.status == "KILLED" and history(client, run, "test_loss")[0][0] == 1
    monkeypatch.undo()

    (tmp_path / "second").mkdir()
    second = store(tmp_path / "second")
    assert main(["--resume", str(out), "--mlflow", second, "--no-progress"]) == 0
    client, run = mlflow_run(out)
    assert client.tracking_uri == second and run.info.status == "FINISHED"
    assert [step for step, _ in history(client, run, "test_loss")] == [1, 2, 3]


def test_the_flag_alone_takes_the_environments_uri_else_a_store_in_the_working_folder(tmp_path, monkeypatch):
    assert build_parser().parse_args(["--mlflow"]).mlflow == mlflow_log.MLFLOW_DEFAULT
    assert build_parser().parse_args([]).mlflow is None
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_log.tracking_uri(mlflow_log.MLFLOW_DEFAULT) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert mlflow_log.tracking_uri(mlflow_log.MLFLOW_DEFAULT) == "sqlite:///elsewhere.db"
    assert mlflow_log.tracking_uri("http://tracking:5000") == "http://tracking:5000"


def test_without_the_extra_the_run_is_refused_in_one_line_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if mlflow were not installed
    config = TrainConfig(epochs=1, out=str(tmp_path / "run"), mlflow=store(tmp_path), threads=1)
    with pytest.raises(ConfigError, match=r'^mlflow needs the mlflow extra: pip install -e "\.\[mlflow\]"'):
        pyro_vae.train(config, progress=False, log=lambda line: None)
    assert not (tmp_path / "mlflow.db").exists()
