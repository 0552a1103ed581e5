"""The files of a training run, in one folder: config.json, metrics.jsonl, checkpoint.pt, the figures and
summary.json (written last, so a folder without it is an unfinished run).

Only the main process (rank 0) writes; on the other ranks of a data-parallel job every write is skipped,
so the training loop calls the same methods on every rank. Every file goes through `files`' atomic write.
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import IO

from pyro_vae import data, files
from pyro_vae.core.model import VAE
from pyro_vae.distributed import World
from pyro_vae.errors import ConfigError, PyroVAEError
from pyro_vae.training import stopping
from pyro_vae.training.checkpoint import store
from pyro_vae.training.checkpoint.payload import Checkpoint
from pyro_vae.training.report import records
from pyro_vae.training.report.mlflow_log import MLflowLog
from pyro_vae.training.report.tensorboard import TensorBoardLog

NEW_FOLDER = "choose a new folder (without one, a new runs/<timestamp> is made)"


class RunFolder:
    """Where a run's files go; `writes` is False on the ranks other than 0."""

    def __init__(self, path: Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        self.tensorboard: TensorBoardLog | None = None
        self.mlflow: MLflowLog | None = None
        self._lock: IO[str] | None = None

    def claim(self, world: World) -> None:
        """Hold the folder's lock (an fcntl lock on RUN/.lock, which the system releases when the process
        ends, however it ends) while this run writes it: a second process that would train or resume into
        the same folder is refused with a line naming the holder. Rank 0 takes it; every rank gets the error."""
        error = None
        if world.is_main:
            try:
                self._take_lock()
            except PyroVAEError as refused:
                error = refused
        error = world.share(error)
        if error is not None:
            raise error

    def _take_lock(self) -> None:
        try:
            handle = open(self.path / ".lock", "a+")
        except OSError as error:
            raise ConfigError(f"cannot open {self.path / '.lock'}: {error.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process"
            handle.close()
            raise ConfigError(
                f"{self.path} is in use: {holder} holds its lock ({self.path / '.lock'}) and is writing it; "
                "wait for that run to end, or stop it, then resume"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock = handle

    @classmethod
    def create(cls, out: str | None, world: World) -> "RunFolder":
        """A new run folder: `out` if given (it must not hold files yet, or only those of a run that stopped
        before its first checkpoint: they are cleared once the lock is taken), else a new runs/<timestamp>.
        Rank 0 makes it; every rank gets its path, or the same error."""
        made = None
        if world.is_main:
            try:
                made = str(new_run_dir(out))
            except PyroVAEError as error:
                made = error
        made = world.share(made)
        if isinstance(made, PyroVAEError):
            raise made
        folder = cls(Path(made), world.is_main)
        folder.claim(world)
        if folder.writes:  # what an unstarted run left (nothing, in a new folder)
            (folder.path / "metrics.jsonl").unlink(missing_ok=True)
        folder.remove_stale_temporaries()
        return folder

    def write_config(self, config: dict) -> None:
        if self.writes:
            files.write_json(self.path / "config.json", config)

    def remove_stale_temporaries(self) -> None:
        """On resume: the temporary files of writes that a kill interrupted (`files.atomic_write` names them
        .<file>.<random>.tmp); the files they were to replace are intact."""
        if self.writes:
            for stale in self.path.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def restart_metrics(self, records: list[dict]) -> None:
        """On resume: metrics.jsonl as the checkpoint has it (it may hold an epoch finished after the
        checkpoint; the checkpoint's list is the truth), and no summary.json until the run ends again."""
        if self.writes:
            files.write_jsonl(self.path / "metrics.jsonl", records)
            (self.path / "summary.json").unlink(missing_ok=True)

    def open_tensorboard(self, config: dict) -> None:
        """Also write TensorBoard event files, in tensorboard/ (see `tensorboard_log`)."""
        if self.writes:
            self.tensorboard = TensorBoardLog(self.path, config)

    def open_mlflow(self, config: dict, uri: str, experiment: str, earlier: list[dict]) -> None:
        """Also log to MLflow (see `mlflow_log`): a new MLflow run, or this folder's own continued; a run
        resumed into a new one logs its `earlier` epochs first."""
        if self.writes:
            self.mlflow = MLflowLog(self.path, config, uri, experiment, earlier)

    def record_epoch(self, record: dict, vae: VAE, dataset: data.Dataset) -> None:
        """The epoch's line of metrics.jsonl, and its TensorBoard and MLflow records when those are on."""
        if self.writes:
            files.append_jsonl(self.path / "metrics.jsonl", record)
            if self.tensorboard is not None:
                self.tensorboard.epoch(record, vae, dataset)
            if self.mlflow is not None:
                self.mlflow.epoch(record)

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        if self.writes:
            store.save(self.checkpoint_path, checkpoint)

    def save_best(self, checkpoint: Checkpoint) -> None:
        """best.pt: the checkpoint of the epoch of lowest validation loss yet (`--patience`)."""
        if self.writes:
            store.save(self.path / stopping.BEST_FILE, checkpoint)

    def write_figures(self, vae: VAE, dataset: data.Dataset, metrics: list[dict]) -> None:
        if self.writes:
            records.write_figures(vae, dataset, metrics, self.path)

    def write_summary(self, summary: dict) -> None:
        """summary.json, written last; the MLflow run's last records, and FINISHED."""
        if self.writes:
            files.write_json(self.path / "summary.json", summary)
            if self.mlflow is not None:
                self.mlflow.end(summary)
                self.mlflow = None

    def close(self, mlflow_status: str = "KILLED") -> None:
        """Close the TensorBoard writer, mark an MLflow run that did not finish with `mlflow_status` (KILLED:
        stopped, to be resumed; FAILED) and give the lock back (safe to call more than once)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.mlflow is not None:
            self.mlflow, log = None, self.mlflow
            log.stop(mlflow_status)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"


def new_run_dir(out: str | None, reuse: bool = False) -> Path:
    """The run folder: `out` if given (it must not hold files yet, unless `reuse`), else a new
    runs/<timestamp>; made, and checked to be writable."""
    try:
        return _make_run_dir(out, reuse)
    except OSError as error:  # a name too long, a read-only or special file system, no permission
        raise ConfigError(
            f"@out: cannot make the run folder {out or 'runs/'}: {error.strerror}; choose another folder"
        ) from None


def unstarted_run(path: Path) -> bool:
    """Whether `path` holds only what a run writes before its first checkpoint (its config, epoch records, lock,
    temporaries) and no checkpoint: nothing that could be resumed, so a new run may take the folder (its lock
    is still taken before anything is written, so a run starting there now is not overwritten)."""
    names = [entry.name for entry in path.iterdir()]
    return "checkpoint.pt" not in names and all(
        name in ("config.json", "metrics.jsonl", ".lock") or name.endswith(".tmp") for name in names
    )


def _make_run_dir(out: str | None, reuse: bool) -> Path:
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path, n = Path("runs") / stamp, 1
        while path.exists():
            path, n = Path("runs") / f"{stamp}-{n}", n + 1
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"@out names {path}, which exists and is not a folder; {NEW_FOLDER}")
        if path.is_dir() and any(path.iterdir()) and not reuse and not unstarted_run(path):
            raise ConfigError(f"@out names {path}, which already exists and is not empty; {NEW_FOLDER}")
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write-test"
    probe.touch()
    probe.unlink()
    return path
