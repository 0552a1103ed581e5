"""Early stopping (`patience`): the rule read from the epoch records, best.pt holding the best epoch's weights
bit for bit, an exact resume, and the refusals."""

from __future__ import annotations

import json
import shutil

import pytest

import pyro_vae
from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.train import main as train_main
from pyro_vae.errors import ConfigError
from pyro_vae.training.run import weights_digest
from pyro_vae.training.stopping import best_record, is_best, stopped_early

QUIET = dict(progress=False, log=lambda line: None)


def records(*losses: float) -> list[dict]:
    return [{"epoch": e + 1, "validation_loss": loss} for e, loss in enumerate(losses)]


def test_the_rule_counts_epochs_since_the_first_lowest_validation_loss():
    assert best_record(records(3, 2, 2, 4))["epoch"] == 2  # the first of equals
    assert is_best(records(3, 2)) and not is_best(records(3, 2, 2))  # an equal loss is no gain
    assert stopped_early(records(3, 2, 2, 4), 2) == 2
    assert stopped_early(records(3, 2, 2, 4), 3) is None
    assert stopped_early(records(3, 2, 2, 4), 0) is None  # patience 0: never
    assert stopped_early([{"epoch": 1}], 1) is None  # no validation split: never
    assert stopped_early(records(3, 2, 1), 1) is None


def config(tmp_path, name: str, epochs: int = 40, patience: int = 1) -> pyro_vae.TrainConfig:
    return pyro_vae.TrainConfig(validation=1000, lr=0.01, epochs=epochs, patience=patience, checkpoint_every=3,
                                out=str(tmp_path / name))  # fmt: skip


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stopped")
    return folder, pyro_vae.train(config(folder, "a"), **QUIET)


def test_a_run_stops_once_patience_epochs_bring_no_gain_and_says_so(stopped):
    folder, run = stopped
    losses = [m["validation_loss"] for m in run.metrics]
    best = losses.index(min(losses)) + 1
    assert len(losses) < 40 and len(losses) - best == 1  # it stopped, one epoch after its best
    summary = json.loads((folder / "a" / "summary.json").read_text())
    assert summary["stopped_early"] == dict(after_epoch=len(losses), best_epoch=best, patience=1)
    assert summary["best"]["epoch"] == best


def test_best_pt_holds_the_best_epochs_weights_bit_for_bit(stopped, tmp_path):
    folder, run = stopped
    best = best_record(run.metrics)["epoch"]
    to_best = pyro_vae.train(config(tmp_path, "b", epochs=best, patience=0), **QUIET)
    loaded = pyro_vae.load_run(folder / "a", best=True)
    assert weights_digest(loaded.vae) == weights_digest(to_best.vae) != weights_digest(run.vae)
    assert loaded.metrics[-1]["epoch"] == best


def test_a_stopped_run_resumed_midway_stops_at_the_same_epoch_with_the_same_best_pt(stopped, tmp_path):
    folder, run = stopped
    best = best_record(run.metrics)["epoch"]
    pyro_vae.train(config(tmp_path, "c", epochs=best - 1), **QUIET)
    resumed = pyro_vae.resume(tmp_path / "c", epochs=40, **QUIET)
    assert [m["validation_loss"] for m in resumed.metrics] == [m["validation_loss"] for m in run.metrics]
    assert weights_digest(resumed.vae) == weights_digest(run.vae)
    same_best = pyro_vae.load_run(tmp_path / "c", best=True)
    assert weights_digest(same_best.vae) == weights_digest(pyro_vae.load_run(folder / "a", best=True).vae)


def test_a_finished_early_stop_is_left_alone_and_a_larger_patience_trains_on(stopped, tmp_path, capsys):
    folder, run = stopped
    shutil.copytree(folder / "a", tmp_path / "d")
    assert train_main(["--resume", str(tmp_path / "d"), "--threads", "1", "--no-progress"]) == 0
    assert "stopped early after epoch" in capsys.readouterr().err
    assert len(pyro_vae.load_run(tmp_path / "d").metrics) == len(run.metrics)
    assert train_main(["--resume", str(tmp_path / "d"), "--patience", "3", "--threads", "1", "--no-progress"]) == 0
    assert len(pyro_vae.load_run(tmp_path / "d").metrics) > len(run.metrics)


def test_evaluate_best_reads_best_pt_and_says_which_weights(stopped, tmp_path):
    folder, run = stopped
    best = best_record(run.metrics)["epoch"]
    assert evaluate_main([str(folder / "a"), "--best", "--samples", "3", "--images", "5", "--threads", "1"]) == 0
    result = json.loads((folder / "a" / f"evaluation-epoch{best}-K3.json").read_text())
    assert result["weights"] == "best" and result["epoch"] == best


def test_patience_without_a_validation_split_and_best_without_best_pt_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="hold out a validation split"):
        pyro_vae.TrainConfig(patience=5)  # the default data has no validation split
    pyro_vae.train(pyro_vae.TrainConfig(epochs=1, out=str(tmp_path / "e")), **QUIET)
    with pytest.raises(ConfigError, match="no best.pt .*trained without patience"):
        pyro_vae.load_run(tmp_path / "e", best=True)
