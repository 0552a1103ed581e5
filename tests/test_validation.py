"""A validation split held out of the training images: what chooses the best epoch; the test split is
only reported."""

from __future__ import annotations

import json

import pytest
import torch

from pyro_vae import data, files
from pyro_vae.cli.train import main
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.inputs import load_training_data
from pyro_vae.training.report import records

SMALL = ["--hidden", "32", "--z-dim", "2", "--no-progress", "--threads", "1"]


def test_hold_out_is_a_fixed_disjoint_draw_with_its_labels():
    dataset = data.load_dataset("default")
    a, b = data.hold_out(dataset, 300), data.hold_out(dataset, 300)
    assert torch.equal(a.validation, b.validation) and torch.equal(a.train, b.train)
    assert a.train.shape[0] == 3700 and a.validation.shape[0] == 300
    assert a.validation_labels.shape == (300,) and a.train_labels.shape == (3700,)
    rows = {tuple(r.tolist()) for r in dataset.train}
    assert len(rows) == dataset.train.shape[0]  # the default data has no duplicate images, so rows identify them
    held, kept = ({tuple(r.tolist()) for r in split} for split in (a.validation, a.train))
    assert not held & kept and held | kept == rows
    assert set(a.validation_labels.tolist()) == set(range(10))  # a random draw, not one digit


def test_an_epoch_is_evaluated_on_the_test_split_and_the_held_out_one_with_their_labels():
    dataset = data.with_rows(data.load_dataset("default"))
    assert list(dataset.evaluation_splits()) == ["test"]
    images, labels, rows = dataset.evaluation_splits()["test"]
    assert images is dataset.test and labels is dataset.test_labels and rows is dataset.test_rows
    held = data.hold_out(dataset, 300)
    assert list(held.evaluation_splits()) == ["test", "validation"]
    images, labels, rows = held.evaluation_splits()["validation"]
    assert images is held.validation and labels is held.validation_labels and rows is None


def test_mnist_holds_out_ten_thousand_by_default(data_dir):
    dataset = load_training_data(TrainConfig(dataset="mnist", data_dir=str(data_dir)), torch.device("cpu"))
    assert (dataset.train.shape[0], dataset.validation.shape[0], dataset.test.shape[0]) == (50000, 10000, 10000)
    assert dataset.is_binary is False and bool(((dataset.validation == 0) | (dataset.validation == 1)).all())
    assert (
        load_training_data(
            TrainConfig(dataset="mnist", data_dir=str(data_dir), validation=0), torch.device("cpu")
        ).validation
        is None
    )


def test_the_validation_loss_is_recorded_and_chooses_the_best_epoch(tmp_path):
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "2", "--validation", "500", "--out", str(out)]) == 0
    records = files.read_jsonl(out / "metrics.jsonl")
    assert all("validation_loss" in r for r in records)
    summary = json.loads((out / "summary.json").read_text())
    best = min(records, key=lambda r: r["validation_loss"])
    assert summary["best"] == dict(
        epoch=best["epoch"],
        validation_loss=best["validation_loss"],
        test_loss=best["test_loss"],
        chosen_on="validation_loss",
    )
    assert json.loads((out / "config.json").read_text())["validation"] == 500


def test_the_best_epoch_is_never_chosen_on_the_test_split():
    metrics = [dict(epoch=1, validation_loss=10.0, test_loss=30.0), dict(epoch=2, validation_loss=20.0, test_loss=5.0)]
    summary = records.summary(metrics, 1.0, torch.device("cpu"), 1, "dynamic")
    assert summary["best"]["epoch"] == 1 and "best_test_loss" not in summary
    assert records.summary([dict(epoch=1, test_loss=5.0)], 1.0, torch.device("cpu"), 1, "dynamic")["best"] is None


def test_the_local_guide_has_no_validation_split():
    config = TrainConfig(model=ModelConfig(guide="local"), dataset="mnist")
    assert config.resolved_validation == 0


def test_an_impossible_validation_size_gets_one_line(tmp_path, capsys):
    assert main(SMALL + ["--validation", "4000", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--validation 4000: hold out from 1 to 3999 of the 4000 training images" in err and err.count("\n") == 1
    assert main(SMALL + ["--validation", "-1", "--out", str(tmp_path / "run")]) == 2
    assert "--validation must be a whole number from 0 to 100,000,000, got -1" in capsys.readouterr().err


def test_the_default_test_split_is_in_a_fixed_class_mixed_order():
    """Its first images (the figures' 16, evaluate's --images 100) show every digit, the same every time."""
    a, b = data.load_default(), data.load_default()
    assert torch.equal(a.test, b.test) and torch.equal(a.test_labels, b.test_labels)
    assert len(set(a.test_labels[:16].tolist())) >= 7 and set(a.test_labels[:100].tolist()) == set(range(10))
    assert sorted(a.test_labels.tolist()) == sorted(sum([[d] * 100 for d in range(10)], []))


def test_the_library_refuses_grey_pixels_under_a_bernoulli_likelihood_as_the_command_line_does():
    from pyro_vae.core.model import VAE
    from pyro_vae.errors import DataError
    from pyro_vae.evaluation import likelihood as evaluate

    vae = VAE(ModelConfig(hidden=(8,), z_dim=2))
    grey = data.load_dataset("default").test[:10]
    for estimate in (lambda: evaluate.log_likelihood(vae, grey, 3), lambda: evaluate.negative_elbo(vae, grey)):
        with pytest.raises(DataError, match="needs pixels that are 0 or 1"):
            estimate()
    assert evaluate.negative_elbo(vae, data.fixed_binarization(grey, 0)) > 0


def test_a_density_likelihood_says_why_its_loss_can_be_negative(tmp_path, capsys):
    assert main(SMALL + ["--likelihood", "gaussian", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert "is a density over grey levels, not a probability" in capsys.readouterr().err
