"""Figures for people: loss curves, reconstructions, prior samples and the latent space."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyro_vae import files  # noqa: E402
from pyro_vae.core.networks import channels_first  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    """The figure into `path` (its format from the suffix) through an atomic write."""
    path = Path(path)
    files.atomic_write(
        path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight")
    )
    plt.close(fig)


def pictures(images: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
    """Rows of pixels as pictures (N, H, W) in grey, or (N, H, W, 3) in colour: (H, W) and (1, H, W) images
    are grey, (3, H, W) colour, other channel counts shown by their mean, and (D,) rows as one line of D."""
    c, h, w = (1, 1, image_shape[0]) if len(image_shape) == 1 else channels_first(image_shape)
    images = images.reshape(-1, c, h, w)
    return images.permute(0, 2, 3, 1) if c == 3 else images.mean(1)


def _tile(images: torch.Tensor, rows: int, image_shape: tuple[int, ...]) -> torch.Tensor:
    """(rows * cols, D) images -> one (rows * h, cols * w) mosaic (with a last axis of 3 in colour)."""
    shown = pictures(images, image_shape)
    h, w = shown.shape[1:3]
    cols = images.shape[0] // rows
    grid = shown[: rows * cols].reshape(rows, cols, h, w, -1).permute(0, 2, 1, 3, 4)
    return grid.reshape(rows * h, cols * w, -1).squeeze(-1)


def animation(
    images: torch.Tensor, path: Path, image_shape: tuple[int, ...], ms_per_frame: int = 120, scale: int = 4
) -> None:
    """An animated GIF (looping, there and back) of images in [0, 1], one a frame, `scale` times enlarged."""
    from PIL import Image

    pixels = (pictures(images.float().cpu().clamp(0, 1), image_shape) * 255).round().to(torch.uint8)
    h, w = pixels.shape[1:3]
    frames = [
        Image.fromarray(p.numpy()).resize((w * scale, h * scale), Image.NEAREST)
        for p in torch.cat([pixels, pixels.flip(0)[1:-1]])
    ]
    files.atomic_write(
        Path(path),
        lambda f: frames[0].save(
            f, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0
        ),
    )


def loss_curve(metrics: list[dict], path: Path, title: str = "") -> None:
    """Train, validation (where there is one) and test negative ELBO per image against epochs."""
    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    if all("validation_loss" in m for m in metrics):
        ax.plot(epochs, [m["validation_loss"] for m in metrics], "^-", label="validation")
    ax.plot(epochs, [m["test_loss"] for m in metrics], "s-", label="test")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("negative ELBO (nats per image)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def quality_curves(curves: dict[str, list[dict]], path: Path, lines: dict[str, float], title: str = "") -> None:
    """log p(x) against epochs and against hours of training (cumulative `seconds`), one curve per name in
    `curves` (epoch records; those without `test_log_likelihood` only add their time); `lines`: labelled
    horizontal references such as the paper's figure."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, records in curves.items():
        hours, points = 0.0, []
        for record in records:
            hours += record["seconds"] / 3600
            if "test_log_likelihood" in record:
                points.append((record["epoch"], hours, record["test_log_likelihood"]))
        epochs, times, values = zip(*points) if points else ((), (), ())
        axes[0].plot(epochs, values, "o-", ms=3, label=name)
        axes[1].plot(times, values, "o-", ms=3)
    for ax, label in zip(axes, ("epoch", "hours of training (evaluation excluded)")):
        for i, (text, value) in enumerate(lines.items()):
            ax.axhline(value, color=f"C{len(curves) + i}", ls="--", lw=1, label=text if ax is axes[0] else None)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test log p(x) (nats per image)")
    fig.suptitle(title)
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9)
    _save(fig, path)


def image_grid(images: torch.Tensor, path: Path, rows: int, image_shape: tuple[int, ...], title: str) -> None:
    """A mosaic of images in [0, 1] with `rows` rows."""
    fig, ax = plt.subplots(figsize=(images.shape[0] / rows * 0.6, rows * 0.6 + 0.4))
    ax.imshow(_tile(images.float().cpu(), rows, image_shape), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    _save(fig, path)


def latent(means: torch.Tensor, labels: torch.Tensor | None, path: Path, class_names: tuple[str, ...] = ()) -> None:
    """Latent means of the test set, coloured by label and named by `class_names`; projected on two
    principal axes if z-dim > 2, against the class if z-dim is 1; one colour where the data has no labels."""
    means = means.double().cpu()
    if means.shape[1] > 2:
        centred = means - means.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        points, axis = centred @ v[:2].T, "principal axis"
    elif means.shape[1] == 2:
        points, axis = means, "z"
    else:  # z-dim 1: z across, the class (or nothing) up, spread by a fixed jitter so points do not hide each other
        jitter = torch.rand(means.shape[0], generator=torch.Generator().manual_seed(0), dtype=means.dtype) * 0.6 - 0.3
        up = jitter if labels is None else labels.cpu().to(means.dtype) + jitter
        points, axis = torch.stack([means[:, 0], up], 1), "z"
    fig, ax = plt.subplots(figsize=(6.5, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.7)
    else:
        scatter = ax.scatter(
            points[:, 0], points[:, 1], c=labels.cpu().numpy(), cmap="tab10", vmin=-0.5, vmax=9.5, s=4, alpha=0.7
        )
        bar = fig.colorbar(scatter, ax=ax, label="class", ticks=range(10))
        if class_names:
            bar.ax.set_yticklabels(class_names)
    ax.set_xlabel(f"{axis} 1" if means.shape[1] > 1 else "z")
    ax.set_ylabel(f"{axis} 2" if means.shape[1] > 1 else ("class" if labels is not None else "") + " (jittered)")
    ax.set_title("test-set latent means" + (" (PCA)" if means.shape[1] > 2 else ""))
    _save(fig, path)


def estimator_variance(rows: list[dict], path: Path) -> None:
    """Total gradient variance of encoder and decoder at each snapshot, one bar per estimator, with
    95% intervals, on a log scale."""
    snapshots = list(dict.fromkeys(r["snapshot"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    width = 0.8 / len(estimators)
    for ax, group in zip(axes, ("encoder", "decoder")):
        for i, estimator in enumerate(estimators):
            mine = [next(r for r in rows if r["snapshot"] == s and r["estimator"] == estimator) for s in snapshots]
            value = [r[f"{group}_variance"] for r in mine]
            error = [
                [max(0.0, v - r[f"{group}_variance_low"]) for v, r in zip(value, mine)],
                [max(0.0, r[f"{group}_variance_high"] - v) for v, r in zip(value, mine)],
            ]
            ax.bar([j + i * width for j in range(len(snapshots))], value, width, yerr=error, capsize=3, label=estimator)
        ax.set_xticks([j + width * (len(estimators) - 1) / 2 for j in range(len(snapshots))], snapshots)
        ax.set_yscale("log")
        ax.set_title(f"{group} gradient: total variance tr Cov[g]")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend()
    _save(fig, path)


def snr_against_k(rows: list[dict], path: Path) -> None:
    """Gradient SNR against K on log-log axes: one panel per (snapshot, encoder or decoder), one line per
    estimator with its 95% intervals, and dotted K^(1/2) and K^(-1/2) guides through the first point."""
    snapshots = list(dict.fromkeys(r["snapshot"] for r in rows))
    fig, axes = plt.subplots(len(snapshots), 2, figsize=(10, 3.6 * len(snapshots)), squeeze=False)
    for axes_row, snapshot in zip(axes, snapshots):
        for ax, group in zip(axes_row, ("encoder", "decoder")):
            for estimator in dict.fromkeys(r["estimator"] for r in rows):
                mine = [r for r in rows if r["snapshot"] == snapshot and r["estimator"] == estimator]
                ks, snr = [r["K"] for r in mine], [r[f"{group}_snr"] for r in mine]
                low = [max(0.0, s - r[f"{group}_snr_low"]) for s, r in zip(snr, mine)]
                high = [max(0.0, r[f"{group}_snr_high"] - s) for s, r in zip(snr, mine)]
                ax.errorbar(ks, snr, yerr=[low, high], marker="o", capsize=2, label=estimator)
            first = next(r for r in rows if r["snapshot"] == snapshot)
            for power in (0.5, -0.5):
                scale = [first[f"{group}_snr"] * (k / first["K"]) ** power for k in ks]
                ax.plot(ks, scale, ":", color="grey", linewidth=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("K (samples per image)")
            ax.set_title(f"{group} gradient SNR, {snapshot}", fontsize=9)
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.subplots_adjust(hspace=0.35)
    _save(fig, path)


def estimator_curves(curves: list[dict], path: Path) -> None:
    """Test negative ELBO against steps and against training seconds: the mean over seeds, and a band
    from the best to the worst seed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for estimator in dict.fromkeys(p["estimator"] for p in curves):
        mine = [p for p in curves if p["estimator"] == estimator]
        steps = sorted({p["step"] for p in mine})
        at = [[p for p in mine if p["step"] == s] for s in steps]
        loss = torch.tensor([[p["test_loss"] for p in points] for points in at])
        seconds = torch.tensor([[p["seconds"] for p in points] for points in at]).mean(1)
        for ax, x in zip(axes, (steps, seconds.tolist())):
            (line,) = ax.plot(x, loss.mean(1).tolist(), label=f"{estimator} ({loss.shape[1]} seeds)")
            ax.fill_between(
                x, loss.min(1).values.tolist(), loss.max(1).values.tolist(), color=line.get_color(), alpha=0.25
            )
    low = min(p["test_loss"] for p in curves)
    high = sorted(p["test_loss"] for p in curves)[int(0.9 * len(curves))]
    axes[0].set_ylim(low - 0.05 * (high - low), high)  # the first evaluations would flatten the rest
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("training seconds (evaluation excluded), mean over seeds")
    axes[0].set_ylabel("test negative ELBO (nats per image)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    _save(fig, path)


def rate_distortion(points: list[dict], path: Path) -> None:
    """Distortion D against rate R (nats) for each beta, with dotted lines of equal ELBO (D + R = const,
    slope -1); the autoencoder's infinite rate is drawn as its distortion level, a dashed line."""
    finite = [p for p in points if p["rate"] != float("inf")]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([p["rate"] for p in finite], [p["distortion"] for p in finite], "o-", label="VAE at KL weight beta")
    for p in finite:
        ax.annotate(f"beta={p['beta']:g}", (p["rate"], p["distortion"]), textcoords="offset points", xytext=(5, 5))
    for p in points:
        if p["rate"] == float("inf"):
            ax.axhline(
                p["distortion"],
                color="C3",
                ls="--",
                label=f"autoencoder (point mass, rate = inf): D = {p['distortion']:.1f}",
            )
    rates, distortions = [p["rate"] for p in finite], [p["distortion"] for p in points]
    right, bottom, top = max(rates) * 1.1 + 1, min(distortions), max(distortions)
    bottom, top = bottom - 0.05 * (top - bottom) - 1, top + 0.05 * (top - bottom) + 1
    for level in sorted({round(p["negative_elbo"]) for p in finite}):
        ax.plot([0, right], [level, level - right], ":", color="grey", lw=0.8)
    ax.plot([], [], ":", color="grey", label="equal ELBO: D + R = const")
    ax.set(
        xlim=(0, right),
        ylim=(bottom, top),
        xlabel="rate R = KL(q(z|x) || p(z)), nats",
        ylabel="distortion D = -E_q log p(x|z), nats",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def sweep_images(points: list[dict], path: Path, image_shape: tuple[int, ...]) -> None:
    """One row per model of a sweep: its prior samples, then its reconstructions of the test images shown
    in the top row."""
    count = points[0]["prior_samples"].shape[0]
    blank = torch.ones(count, math.prod(image_shape))
    rows = [torch.cat([blank, points[0]["originals"].float()])]
    rows += [torch.cat([p["prior_samples"].float(), p["reconstructions"].float()]) for p in points]
    fig, ax = plt.subplots(figsize=(2 * count * 0.45, len(rows) * 0.45 + 0.4))
    ax.imshow(_tile(torch.cat(rows), len(rows), image_shape), cmap="gray", vmin=0, vmax=1)
    h, w = pictures(blank[:1], image_shape).shape[1:3]
    ax.set_yticks([h * (i + 0.5) for i in range(len(rows))], ["test images", *(p["name"] for p in points)], fontsize=8)
    ax.set_xticks(
        [w * count / 2, w * count * 1.5], ["prior samples E[x|z], z ~ N(0, I)", "reconstructions"], fontsize=8
    )
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    _save(fig, path)
