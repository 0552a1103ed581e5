"""MLflow records of a run (`--mlflow [URI]`, needs the `mlflow` extra), through MLflow's own client:

    parameters   the run's config, flattened (model.z_dim, lr, ...), once, when the MLflow run is made
    metrics      every number of each epoch's record (train_loss, test_loss, test_kl, lr, ...) at step = epoch;
                 at the end the best epoch's (best_epoch, best_validation_loss, best_test_loss) and total_seconds;
                 after `scripts/evaluate.py`, its numbers as evaluation/<name>
    artifacts    config.json, summary.json, the figures, the evaluations' JSON files
    tags         pyro_vae.run_folder: the run folder's absolute path (its checkpoint, to resume or load it)

RUN_DIR/mlflow.json keeps the tracking URI and the MLflow run's id, so a resumed run (or an evaluation)
continues the same MLflow run; a resumed run given another URI starts a new MLflow run there, its earlier
epochs logged first. The status is RUNNING while training, FINISHED at the end, KILLED when stopped (it
can be resumed) and FAILED on an error.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from pyro_vae import files
from pyro_vae.errors import ConfigError

MLFLOW_DEFAULT = "default"  # --mlflow alone: $MLFLOW_TRACKING_URI, else sqlite:///<working folder>/mlflow.db
RECORD_FILE = "mlflow.json"
FOLDER_TAG = "pyro_vae.run_folder"


def tracking_uri(given: str) -> str:
    """The tracking URI `--mlflow` names: as given, or for the flag alone $MLFLOW_TRACKING_URI, else the
    SQLite store mlflow.db in the working folder (an absolute path, so a resume from elsewhere finds it)."""
    if given != MLFLOW_DEFAULT:
        return given
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's file (mlartifacts/ in its folder),
    not in whatever folder the process runs in (MLflow's ./mlruns); a server's own choice otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            '@mlflow needs the mlflow extra: pip install -e ".[mlflow]" in a checkout, or pip install mlflow'
        ) from None
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # its table-creation lines
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as error:  # MLflow's own exceptions: a bad URI, a store it refuses
        raise ConfigError(f"@mlflow: MLflow cannot open {uri}: {str(error).splitlines()[0]}") from None


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """The config as MLflow parameters: nested settings as model.<name>, every value as text."""
    params = {}
    for name, value in config.items():
        if isinstance(value, dict):
            params.update(flat_params(value, f"{prefix}{name}."))
        else:
            params[prefix + name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return params


def numbers(record: dict, prefix: str = "") -> dict[str, float]:
    """The record's numeric entries (not `epoch`, which is the step), as MLflow metrics."""
    return {
        prefix + key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"
    }


class MLflowLog:
    """One run's MLflow run: made, or continued from RUN_DIR/mlflow.json when its URI is the same."""

    def __init__(self, run_dir: Path, config: dict, uri: str, experiment: str, earlier: list[dict]):
        self.run_dir, self.uri = Path(run_dir), tracking_uri(uri)
        self.client = _client(self.uri)
        stored = read_record(self.run_dir)
        if stored is not None and stored["tracking_uri"] == self.uri:
            self.run_id = stored["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.run_id = self._new_run(config, experiment)
        files.write_json(self.run_dir / RECORD_FILE, dict(tracking_uri=self.uri, run_id=self.run_id))
        for record in earlier:  # a run resumed into a new MLflow run: its history first
            self.epoch(record)

    def _new_run(self, config: dict, experiment: str) -> str:
        from mlflow.entities import Param

        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(experiment, artifact_location=artifact_location(self.uri))
        )
        made = self.client.create_run(
            experiment_id, run_name=self.run_dir.name, tags={FOLDER_TAG: str(self.run_dir.resolve())}
        )
        params = [Param(key, value[:6000]) for key, value in flat_params(config).items()]
        self.client.log_batch(made.info.run_id, params=params)
        return made.info.run_id

    def epoch(self, record: dict) -> None:
        log_numbers(self.client, self.run_id, numbers(record), record["epoch"])

    def end(self, summary: dict) -> None:
        """The summary's numbers (the best epoch's, the time), the run folder's JSON files and figures; FINISHED."""
        best = summary.get("best") or {}
        ended = {f"best_{key}": value for key, value in numbers(best).items()}
        if "epoch" in best:
            ended["best_epoch"] = float(best["epoch"])
        ended["total_seconds"] = float(summary["total_seconds"])
        log_numbers(self.client, self.run_id, ended, summary["final"]["epoch"])
        for name in ("config.json", "summary.json", *sorted(p.name for p in self.run_dir.glob("*.png"))):
            if (self.run_dir / name).exists():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, "FINISHED")

    def stop(self, status: str) -> None:
        """The run ended before its summary: KILLED (stopped, resumable) or FAILED."""
        self.client.set_terminated(self.run_id, status)


def read_record(run_dir: Path) -> dict | None:
    """RUN_DIR/mlflow.json (the tracking URI and MLflow run id), or None for a run never logged to MLflow."""
    path = Path(run_dir) / RECORD_FILE
    return json.loads(path.read_text()) if path.exists() else None


def log_evaluation(run_dir: Path, result: dict, saved: Path) -> bool:
    """An evaluation of a run logged to MLflow: its numbers as evaluation/<name> at the run's epoch and its
    JSON file as an artifact, in the run's MLflow run; False (nothing done) for a run without MLflow records."""
    stored = read_record(run_dir)
    if stored is None:
        return False
    client = _client(stored["tracking_uri"])
    log_numbers(client, stored["run_id"], numbers(result, "evaluation/"), int(result["epoch"]))
    client.log_artifact(stored["run_id"], str(saved))
    return True


def log_numbers(client, run_id: str, values: dict[str, float], step: int) -> None:
    """Metrics at `step`, in one call."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, value, stamp, step) for key, value in values.items()])
