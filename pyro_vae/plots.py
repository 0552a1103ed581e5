"""Figures for people: loss curves, reconstructions, prior samples and the latent space."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _tile(images: torch.Tensor, rows: int, image_shape: tuple[int, int]) -> torch.Tensor:
    """(rows * cols, h * w) images -> one (rows * h, cols * w) mosaic."""
    h, w = image_shape
    cols = images.shape[0] // rows
    grid = images[: rows * cols].reshape(rows, cols, h, w).permute(0, 2, 1, 3)
    return grid.reshape(rows * h, cols * w)


def loss_curve(metrics: list[dict], path: Path) -> None:
    """Train and test negative ELBO per image against epochs."""
    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    ax.plot(epochs, [m["test_loss"] for m in metrics], "s-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats per image)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def image_grid(images: torch.Tensor, path: Path, rows: int, image_shape: tuple[int, int], title: str) -> None:
    """A mosaic of images in [0, 1] with `rows` rows."""
    fig, ax = plt.subplots(figsize=(images.shape[0] / rows * 0.6, rows * 0.6 + 0.4))
    ax.imshow(_tile(images.float().cpu(), rows, image_shape), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    _save(fig, path)


def latent(means: torch.Tensor, labels: torch.Tensor | None, path: Path) -> None:
    """Latent means of the test set, coloured by label; projected on two principal axes if z-dim > 2."""
    means = means.double().cpu()
    if means.shape[1] > 2:
        centred = means - means.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        points, axis = centred @ v[:2].T, "principal axis"
    else:
        points, axis = means, "z"
    fig, ax = plt.subplots(figsize=(6, 5))
    colour = None if labels is None else labels.cpu().numpy()
    scatter = ax.scatter(points[:, 0], points[:, 1], c=colour, cmap="tab10", vmin=-0.5, vmax=9.5, s=4, alpha=0.7)
    if labels is not None:
        fig.colorbar(scatter, ax=ax, label="label", ticks=range(10))
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title("test-set latent means" + (" (PCA)" if means.shape[1] > 2 else ""))
    _save(fig, path)
