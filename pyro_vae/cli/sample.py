"""The command line of `python scripts/sample.py RUN_DIR` (also installed as `pyro-vae-sample`): pictures
from a trained run, finished or interrupted: prior samples, reconstructions of chosen test images, and a
walk through the latent space between two test images (a PNG strip, and an animated GIF on request)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pyro_vae.cli.arguments import with_flags
from pyro_vae.cli.parser import Parser
from pyro_vae.errors import ConfigError, PyroVAEError, os_error_line
from pyro_vae.evaluation import plots
from pyro_vae.settings import whole_number
from pyro_vae.training.trained_run import MAX_PATH_STEPS, MAX_PICTURES, SEEDS, load_run


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        description="Draw pictures from a trained run: decoder means E[x|z] of prior samples, reconstructions and "
        "latent interpolations. Writes PNGs (and a GIF with --gif) into RUN_DIR/samples or --out.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="a run folder holding checkpoint.pt")
    p.add_argument(
        "--prior", type=int, default=64, metavar="N", help="prior samples to draw, 0 for none (default: %(default)s)"
    )
    p.add_argument(
        "--reconstruct",
        type=int,
        nargs="+",
        default=[],
        metavar="I",
        help="test images (by position in the test split) to show over their reconstructions",
    )
    p.add_argument(
        "--interpolate",
        type=int,
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="two test images to walk between in the latent space, q's location of A to B's",
    )
    p.add_argument("--steps", type=int, default=10, help="images along the interpolation (default: %(default)s)")
    p.add_argument("--gif", action="store_true", help="also write the interpolation as an animated GIF")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default: %(default)s)")
    p.add_argument("--out", default=None, help="folder for the pictures (default: RUN_DIR/samples)")
    p.add_argument("--data-dir", default=None, help="where the run's dataset lives, if not where it was")
    p.add_argument("--cuda", action="store_true", help="use the GPU")
    return p


def run(args: argparse.Namespace) -> list[Path]:
    """Draw what `args` asks for; returns the files written."""
    whole_number("--seed", args.seed, *SEEDS)  # as TrainedRun.sample: any seed of torch's generators
    if not 0 <= args.prior <= MAX_PICTURES or not 2 <= args.steps <= MAX_PATH_STEPS:
        raise ConfigError(
            f"--prior must be from 0 to {MAX_PICTURES} and --steps from 2 to {MAX_PATH_STEPS}, "
            f"got {args.prior} and {args.steps}"
        )
    trained = load_run(args.run, "cuda" if args.cuda else "cpu", args.data_dir)
    shape = trained.config.model.shape
    count = trained.test_images().shape[0]
    chosen = args.reconstruct + (args.interpolate or [])
    if any(not 0 <= i < count for i in chosen):
        raise ConfigError(f"test images are numbered 0 to {count - 1}; got {chosen}")
    out = Path(args.out) if args.out else Path(args.run) / "samples"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot make the picture folder {out}: {error.strerror or error}; choose another --out"
        ) from None
    written = []
    if args.prior:
        rows = max(1, round(args.prior**0.5))
        written.append(out / f"prior-seed{args.seed}.png")
        plots.image_grid(
            trained.sample(args.prior, args.seed),
            written[-1],
            rows,
            shape,
            f"decoder means of {args.prior} prior samples z ~ N(0, I)",
        )
    if args.reconstruct:
        x, reconstructed = trained.reconstruct(args.reconstruct)
        written.append(out / "reconstructions.png")
        plots.image_grid(
            torch.cat([x, reconstructed]),
            written[-1],
            2,
            shape,
            f"test images {args.reconstruct} (top) and their reconstructions (bottom)",
        )
    if args.interpolate:
        a, b = args.interpolate
        path = trained.interpolate(a, b, args.steps)
        written.append(out / f"interpolation-{a}-{b}.png")
        plots.image_grid(path, written[-1], 1, shape, f"from test image {a} to {b} along a line in z")
        if args.gif:
            written.append(out / f"interpolation-{a}-{b}.gif")
            plots.animation(path, written[-1], shape)
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = run(args)
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
