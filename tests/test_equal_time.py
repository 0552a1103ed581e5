"""Training to a time budget: a run grown by resuming reaches the budget, is the same model as one straight
run of as many epochs, and is measured with its log p(x) diagnostics."""

from __future__ import annotations

from dataclasses import replace

import pyro_vae
from pyro_vae.experiments import equal_time


def test_a_run_trained_for_a_budget_reaches_it_and_equals_a_straight_run(tmp_path):
    config = pyro_vae.TrainConfig(
        model=pyro_vae.ModelConfig(hidden=(16,), z_dim=2), batch_size=500, epochs=1, threads=1, out=str(tmp_path / "a")
    )
    first = equal_time.train_for(config, seconds=0.01)  # one epoch passes any budget below its own time
    assert len(first.metrics) == 1
    run = equal_time.train_for(config, seconds=8 * first.metrics[0]["seconds"])
    seconds = [r["seconds"] for r in run.metrics]
    assert sum(seconds) >= 8 * first.metrics[0]["seconds"] and len(seconds) > 2
    assert len(equal_time.train_for(config, seconds=sum(seconds)).metrics) == len(seconds)  # met: not trained
    straight = pyro_vae.train(replace(config, epochs=len(seconds), out=str(tmp_path / "b")), progress=False)
    grown, whole = run.vae.state_dict(), straight.vae.state_dict()
    assert all(grown[k].equal(whole[k]) for k in whole)  # exact resume: the same model as one run
    row = equal_time.measured(run, samples=20, images=50)
    assert row["epochs"] == len(seconds) and row["train_seconds"] == sum(seconds)
    assert row["test_log_likelihood"] > row["test_elbo"] - 5 * row["standard_error"]  # L_20 above the ELBO
