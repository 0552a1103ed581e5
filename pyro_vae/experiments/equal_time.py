"""Estimators compared at the same wall-clock: each run trained until its training seconds reach a budget,
then measured by test log p(x) with its diagnostics.

A run grows by resuming it (exact: the same as one straight run of that many epochs), each time by the
epochs that fit in 90% of the time left at its slowest epoch's pace (at least one), until its seconds reach
the budget: it ends within about one epoch past it. The seconds are the epochs' own (evaluation, figures and
checkpoints excluded), and the run's real total is returned beside its measurements.
"""

from __future__ import annotations

import time
from pathlib import Path

from pyro_vae.training.config import TrainConfig
from pyro_vae.training.loop import resume, train
from pyro_vae.training.trained_run import TrainedRun, load_run


def train_for(config: TrainConfig, seconds: float) -> TrainedRun:
    """The run `config` describes (in `config.out`), trained until its epochs' seconds reach `seconds`; a
    folder already holding part of it is resumed, one holding enough is only loaded."""
    folder, quiet = Path(config.out), lambda line: None
    if not (folder / "checkpoint.pt").exists():
        train(config, progress=False, log=quiet)
    run = load_run(folder)
    while (spent := sum(r["seconds"] for r in run.metrics)) < seconds:
        more = max(1, int(0.9 * (seconds - spent) / max(r["seconds"] for r in run.metrics)))
        run = resume(folder, epochs=len(run.metrics) + more, progress=False, log=quiet)
    return run


def measured(run: TrainedRun, samples: int, images: int | None) -> dict:
    """A trained run's epochs, training seconds, test ELBO and importance-sampled log p(x) (K = `samples`,
    the first `images` test images) with its standard error and the weights' diagnostics."""
    tic = time.perf_counter()
    evaluation = run.evaluate(samples=samples, images=images)
    estimate = evaluation.log_likelihood
    return dict(
        estimator=run.config.estimator,
        K=run.config.num_particles,
        M=run.config.iwae_copies,
        epochs=len(run.metrics),
        train_seconds=sum(r["seconds"] for r in run.metrics),
        test_elbo=-evaluation.negative_elbo,
        test_log_likelihood=estimate.value,
        standard_error=estimate.standard_error,
        eval_seconds=time.perf_counter() - tic,
        **estimate.diagnostics(),
    )
