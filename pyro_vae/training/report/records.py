"""What a person reads about a run: the per-epoch record and line, the figures, and the summary."""

from __future__ import annotations

from pathlib import Path

import pyro
import torch

from pyro_vae import data
from pyro_vae.core.model import VAE
from pyro_vae.core.program import Program
from pyro_vae.evaluation import plots, sampling
from pyro_vae.evaluation.likelihood import ElboTerms, LogLikelihood
from pyro_vae.training import stopping


def epoch_record(
    epoch: int,
    step: int,
    train_loss: float,
    test: ElboTerms,
    validation: ElboTerms | None,
    seconds: float,
    images: int,
    kl_weight: float,
    skipped: int,
    lr: float,
    log_px: LogLikelihood | None,
) -> dict:
    """One line of metrics.jsonl: the epoch's losses (nats per image; the test loss also as its two terms,
    distortion and rate; the validation loss where there is a validation split), time, and training
    settings in force."""
    record = dict(epoch=epoch, step=step, train_loss=train_loss)
    if validation is not None:
        record.update(validation_loss=validation.negative_elbo)
    record.update(
        test_loss=test.negative_elbo,
        test_reconstruction=test.reconstruction,
        test_kl=test.kl,
        seconds=seconds,
        images_per_second=images / seconds,
        kl_weight=kl_weight,
        skipped_steps=skipped,
        lr=lr,
    )
    if log_px is not None:
        record.update(
            test_log_likelihood=log_px.value,
            test_log_likelihood_se=log_px.standard_error,
            eval_samples=log_px.num_samples,
            eval_images=len(log_px.per_image),
            test_pareto_k_max=log_px.max_pareto_k,
            test_pareto_k_above_0_7=log_px.unreliable_images,
        )
    return record


def epoch_line(record: dict, epochs: int) -> str:
    """The line printed after each epoch."""
    return (
        f"epoch {record['epoch']:3d}/{epochs}  train {record['train_loss']:8.3f}  "
        + (f"valid {record['validation_loss']:8.3f}  " if "validation_loss" in record else "")
        + f"test {record['test_loss']:8.3f} "
        f"nats/image  {record['seconds']:6.2f} s  {record['images_per_second']:8.0f} images/s"
        + (
            f"  log p(x) {record['test_log_likelihood']:.3f} ± {record['test_log_likelihood_se']:.3f} "
            f"(K={record['eval_samples']})"
            if "test_log_likelihood" in record
            else ""
        )
        + (
            f"  [Pareto k-hat > 0.7 for {record['test_pareto_k_above_0_7']} images: log p(x) unreliable]"
            if record.get("test_pareto_k_above_0_7")
            else ""
        )
        + (f"  ({record['skipped_steps']} non-finite steps skipped)" if record["skipped_steps"] else "")
    )


def summary(metrics: list[dict], seconds: float, device: torch.device, processes: int, binarization: str) -> dict:
    """summary.json: the last epoch's record; the best epoch, chosen on the validation loss (never on the
    test split, which is only reported), where there is a validation split; the time, machine, versions."""
    best = stopping.best_record(metrics)
    return dict(
        final=metrics[-1],
        best=None
        if best is None
        else dict(
            epoch=best["epoch"],
            validation_loss=best["validation_loss"],
            test_loss=best["test_loss"],
            chosen_on="validation_loss",
        ),
        total_seconds=seconds,
        device=str(device),
        threads=torch.get_num_threads(),
        processes=processes,
        versions=dict(torch=torch.__version__, pyro=pyro.__version__),
        binarization=binarization,
    )


@torch.no_grad()
def program_figures(vae: Program, dataset: data.Dataset, out: Path, about: str, n_images: int = 16) -> list[Path]:
    """The program's own pictures (`Program.figures`) of the first `n_images` test images, as PNGs in `out`
    (none where its module draws none); the files written."""
    vae.eval()
    x, _ = dataset.first_test(n_images)
    labels = dataset.test_labels[: x.shape[0]] if vae.takes_labels else None
    written = []
    for name, (images, rows, title) in vae.figures(x, labels).items():
        written.append(out / f"{name}.png")
        plots.image_grid(images, written[-1], rows, dataset.image_shape, f"{title} ({about})")
    return written


@torch.no_grad()
def write_figures(
    vae: VAE | Program, dataset: data.Dataset, metrics: list[dict], out: Path, n_images: int = 16
) -> None:
    """loss_curve.png, and for the built-in VAE reconstructions.png, samples.png and latent.png, in `out`; a
    program's own pictures (`Program.figures`: its decoder and prior are its to draw) of the first test images."""
    epochs = metrics[-1]["epoch"] if metrics else 0
    about = f"{dataset.name} data, {epochs} epoch{'' if epochs == 1 else 's'}"
    plots.loss_curve(metrics, out / "loss_curve.png", f"loss per epoch ({about})")
    if isinstance(vae, Program):
        program_figures(vae, dataset, out, about, n_images)
        return
    vae.eval()
    shape = dataset.image_shape
    originals, rows = dataset.first_test(n_images)
    plots.image_grid(
        torch.cat([originals, sampling.reconstructions(vae, originals, rows)]),
        out / "reconstructions.png",
        2,
        shape,
        f"test images (top) and the decoder's mean at q's location (bottom); {about}",
    )
    plots.image_grid(
        sampling.prior_samples(vae, 64, 0, dataset.test.device),
        out / "samples.png",
        8,
        shape,
        f"decoder means of prior samples z ~ N(0, I)\n{about}",
    )
    means = vae.location(*dataset.first_test(5000))
    labels = None if dataset.test_labels is None else dataset.test_labels[:5000]
    plots.latent(means, labels, out / "latent.png", dataset.class_names)
    vae.train()
