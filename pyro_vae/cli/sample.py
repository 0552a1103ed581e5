"""The command line of `python scripts/sample.py RUN_DIR` (also installed as `pyro-vae-sample`): pictures
from a trained run, finished or interrupted: prior samples, reconstructions of chosen test images, and a
walk through the latent space between two test images (a PNG strip, and an animated GIF on request)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from pyro_vae.cli.arguments import config_from_args, settings_parser, with_flags
from pyro_vae.core.program import Program
from pyro_vae.errors import ConfigError, PyroVAEError, os_error_line
from pyro_vae.evaluation import plots
from pyro_vae.settings import check_declared, reuse, setting
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.report import records
from pyro_vae.training.trained_run import MAX_PATH_STEPS, MAX_PICTURES, SEEDS, load_run


@dataclass(frozen=True)
class SampleConfig:
    """What `scripts/sample.py` draws; every field is a flag of the command, declared once."""

    run: str = setting(None, "a run folder holding checkpoint.pt", positional=True, metavar="RUN_DIR")
    prior: int = setting(64, "prior samples to draw, 0 for none", low=0, high=MAX_PICTURES, metavar="N")
    reconstruct: tuple[int, ...] = setting(
        (), "test images (by position in the test split) to show over their reconstructions", low=0,
        high=100_000_000, nargs="+", metavar="I",
    )  # fmt: skip
    interpolate: tuple[int, ...] | None = setting(
        None, "two test images to walk between in the latent space, q's location of A to B's", low=0,
        high=100_000_000, nargs=2, metavar=("A", "B"), default_text="none",
    )  # fmt: skip
    steps: int = setting(10, "images along the interpolation", low=2, high=MAX_PATH_STEPS)
    gif: bool = setting(False, "also write the interpolation as an animated GIF")
    seed: int = setting(0, "seed of the prior samples", low=SEEDS[0], high=SEEDS[1])
    images: int = setting(
        16, "a program's own pictures (M2's samples of each class, the CVAE's completions) of the first N test "
        "images; a program draws these in place of the built-in VAE's pictures", low=1, high=MAX_PICTURES,
        metavar="N",
    )  # fmt: skip
    best: bool = setting(
        False, "the weights of the run's epoch of lowest validation loss (best.pt, kept by a run trained with "
        "--patience), not its last"
    )  # fmt: skip
    out: str | None = setting(None, "folder for the pictures", default_text="RUN_DIR/samples")
    data_dir: str | None = reuse(
        TrainConfig, "data_dir", help="where the run's dataset lives, if not where it was", default_text="where it was"
    )
    cuda: bool = reuse(TrainConfig, "cuda", help="use the GPU", on_resume=False)

    def __post_init__(self) -> None:
        check_declared(self)


def run(config: SampleConfig) -> list[Path]:
    """Draw what `config` asks for; returns the files written."""
    trained = load_run(config.run, "cuda" if config.cuda else "cpu", config.data_dir, best=config.best)
    if isinstance(trained.vae, Program) and (config.reconstruct or config.interpolate):
        raise ConfigError("@reconstruct and @interpolate read the built-in VAE's encoder and decoder; a program "
                          "draws its own pictures (leave them out)")  # fmt: skip
    shape = trained.config.model.shape
    count = trained.test_images().shape[0]
    chosen = [*config.reconstruct, *(config.interpolate or ())]
    if any(not 0 <= i < count for i in chosen):
        raise ConfigError(f"test images are numbered 0 to {count - 1}; got {chosen}")
    out = Path(config.out) if config.out else Path(config.run) / "samples"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot make the picture folder {out}: {error.strerror or error}; choose another @out"
        ) from None
    if isinstance(trained.vae, Program):
        epochs = len(trained.metrics)
        return records.program_figures(trained.vae, trained.test_data(), out, f"{epochs} epochs", config.images)
    written = []
    if config.prior:
        rows = max(1, round(config.prior**0.5))
        written.append(out / f"prior-seed{config.seed}.png")
        plots.image_grid(
            trained.sample(config.prior, config.seed),
            written[-1],
            rows,
            shape,
            f"decoder means of {config.prior} prior samples z ~ N(0, I)",
        )
    if config.reconstruct:
        x, reconstructed = trained.reconstruct(list(config.reconstruct))
        written.append(out / "reconstructions.png")
        plots.image_grid(
            torch.cat([x, reconstructed]),
            written[-1],
            2,
            shape,
            f"test images {list(config.reconstruct)} (top) and their reconstructions (bottom)",
        )
    if config.interpolate:
        a, b = config.interpolate
        path = trained.interpolate(a, b, config.steps)
        written.append(out / f"interpolation-{a}-{b}.png")
        plots.image_grid(path, written[-1], 1, shape, f"from test image {a} to {b} along a line in z")
        if config.gif:
            written.append(out / f"interpolation-{a}-{b}.gif")
            plots.animation(path, written[-1], shape)
    return written


def build_parser() -> argparse.ArgumentParser:
    """The flags of every field of SampleConfig (`arguments.settings_parser`)."""
    return settings_parser(
        SampleConfig,
        "Draw pictures from a trained run: decoder means E[x|z] of prior samples, reconstructions and "
        "latent interpolations. Writes PNGs (and a GIF with --gif) into RUN_DIR/samples or --out.",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = run(config_from_args(args, SampleConfig))
    except PyroVAEError as error:
        print(f"error: {with_flags(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # a full, read-only or unusable --out
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); pictures already written are kept", file=sys.stderr)
        return 130
    for path in written:
        print(path)
    return 0
