"""The end of an epoch: the model evaluated on the test and validation splits (sharded over the ranks;
log p(x) where the epoch asks for it), the epoch recorded (metrics.jsonl, TensorBoard), checkpointed, and its
line printed."""

from __future__ import annotations

from typing import Callable

from pyro_vae.core.model import VAE
from pyro_vae.core.program import Program
from pyro_vae.data import Dataset
from pyro_vae.distributed import World
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.evaluation.estimates import ElboTerms, LogLikelihood
from pyro_vae.evaluation.progress import progress_bar
from pyro_vae.training import stopping
from pyro_vae.training.report import records
from pyro_vae.training.run import Run, TrainingError


def end_of_epoch(
    run: Run, interrupted: Callable[[], bool], log: Callable[[str], None], show_bars: bool = False
) -> bool:
    """Evaluate on the validation and test splits (sharded over ranks), record the epoch, checkpoint it (every
    `checkpoint_every` epochs, at the last, and on Ctrl-C; with `patience`, into best.pt too when its validation
    loss is the lowest yet) and print its line (with `show_bars`, a bar over
    the log p(x) estimate's images); returns whether Ctrl-C asks to stop."""
    config, progress, vae = run.config, run.progress, run.vae
    if progress.images == 0:
        raise TrainingError(f"every step of epoch {progress.epoch + 1} was non-finite and skipped; try a smaller @lr")
    vae.eval()
    test, validation, log_px = epoch_evaluation(run, show_bars)
    own_metrics = program_metrics(vae, run.dataset) if isinstance(vae, Program) else {}
    vae.train()
    record = records.epoch_record(
        epoch=progress.epoch + 1,
        step=progress.step,
        train_loss=progress.loss_sum / progress.images,
        test=test,
        validation=validation,
        seconds=progress.seconds,
        images=run.dataset.train.shape[0],
        kl_weight=run.schedule.kl_weight(progress.step),
        skipped=progress.skipped,
        lr=run.schedule.learning_rate(progress.epoch),
        log_px=log_px,
    )
    record.update(own_metrics)
    progress.finish_epoch(record)
    run.folder.record_epoch(record, vae, run.dataset)
    best = bool(config.patience) and stopping.is_best(progress.metrics)
    stop = interrupted()
    last = progress.epoch % config.checkpoint_every == 0 or not run.more_epochs or stop
    if best or last:
        state = run.checkpoint()  # built once for both files
        if best:
            run.folder.save_best(state)
        if last:
            run.folder.save_checkpoint(state)
    log(records.epoch_line(record, config.epochs))
    return stop


def program_metrics(vae: Program, dataset: Dataset) -> dict[str, float]:
    """What the program says of itself (M2: its accuracy) on the test split, as test_NAME, and on the
    validation split where one is held out, as validation_NAME (an epoch chosen by it never sees the test
    labels: Pyro's M2 tutorial reports the test accuracy at the best validation accuracy)."""
    return {
        f"{split}_{name}": value
        for split, (images, labels, _) in dataset.evaluation_splits().items()
        for name, value in vae.metrics(images, labels if vae.takes_labels else None).items()
    }


def epoch_evaluation(run: Run, show_bars: bool) -> tuple[ElboTerms, ElboTerms | None, LogLikelihood | None]:
    """The test split's -ELBO terms (refused if not finite), the validation split's, and log p(x) of the first
    `eval_images` test images where this epoch asks for it; a program of images and labels is given theirs."""
    config, dataset, world = run.config, run.dataset, run.world
    test, validation = split_elbo_terms(run.vae, dataset, world)
    run.check_finite(test.negative_elbo)
    if not config.evaluates_log_likelihood(run.progress.epoch + 1):
        return test, validation, None
    images, rows = dataset.first_test(config.eval_images)
    labels = dataset.test_labels[: images.shape[0]] if run.vae.takes_labels else None
    with progress_bar(images.shape[0], f"log p(x), K = {config.eval_samples}", show_bars and world.is_main) as bar:
        log_px = evaluate.log_likelihood(
            run.vae, images, config.eval_samples, rows=rows, world=world, progress=bar.update, labels=labels
        )
    return test, validation, log_px


def split_elbo_terms(vae: VAE | Program, dataset: Dataset, world: World) -> tuple[ElboTerms, ElboTerms | None]:
    """The test split's -ELBO terms and the validation split's (None without one), their images shared out
    over the ranks; a program of images and labels is given theirs."""
    terms = {
        split: evaluate.elbo_terms(vae, images, rows=rows, world=world, labels=labels if vae.takes_labels else None)
        for split, (images, labels, rows) in dataset.evaluation_splits().items()
    }
    return terms["test"], terms.get("validation")
