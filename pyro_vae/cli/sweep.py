"""Sweep the KL weight beta from above 1 down to 0 and on to the autoencoder: rate, distortion, pictures.

    python scripts/beta_sweep.py                                       # offline default data, a few minutes
    python scripts/beta_sweep.py --dataset mnist --data-dir DATA_DIR --epochs 10

Trains one model per beta (and the point-mass autoencoder at beta 0) in --out/<name>, each a run folder
that resumes where it stopped; writes sweep.json and sweep.csv (rate, distortion, -ELBO per model),
rate_distortion.png and images.png (prior samples and reconstructions per model) to --out.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict

from pyro_vae import files
from pyro_vae.cli.arguments import add_settings, config_from_args, with_flags
from pyro_vae.cli.parser import Parser
from pyro_vae.errors import PyroVAEError, os_error_line
from pyro_vae.evaluation import plots
from pyro_vae.experiments import beta_sweep
from pyro_vae.settings import declared
from pyro_vae.training.loop import Interrupted
from pyro_vae.training.report.folder import new_run_dir


def parse(argv: list[str] | None) -> tuple[beta_sweep.SweepConfig, argparse.Namespace]:
    """The sweep's config from its flags (`arguments.add_settings`), and the parsed flags (--out)."""
    p = Parser(description=__doc__.split("\n\n")[0])
    add_settings(p, beta_sweep.SweepConfig, only=(*SWEEP_SETTINGS, "likelihood", "z_dim"))
    p.add_argument(
        "--out",
        default=None,
        help="output folder; an earlier sweep's folder resumes it (default: a new runs/<timestamp>)",
    )
    args = p.parse_args(argv)
    return config_from_args(args, beta_sweep.SweepConfig), args


SWEEP_SETTINGS = tuple(f.name for f in declared(beta_sweep.SweepConfig))


def main(argv: list[str] | None = None) -> int:
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        config, args = parse(argv)
        out = new_run_dir(args.out, reuse=True)
        log(f"beta sweep on {config.dataset}: {len(config.points())} models of {config.epochs} epochs; writing {out}")
        points = beta_sweep.sweep(config, out, log, log_epochs=True)
    except PyroVAEError as error:
        print(f"error: {with_flags(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {os_error_line(error)}; each model's folder keeps its last complete checkpoint", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):
        print(
            "interrupted (Ctrl-C); the same command resumes the sweep: finished models are read back, the "
            "interrupted one continues from its last checkpoint",
            file=sys.stderr,
        )
        return 130
    command = "python scripts/beta_sweep.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    rows = beta_sweep.table(points)
    files.write_json(out / "sweep.json", dict(command=command.strip(), config=asdict(config), points=rows))
    files.write_csv(out / "sweep.csv", rows)
    plots.rate_distortion(points, out / "rate_distortion.png")
    plots.sweep_images(points, out / "images.png", points[0]["image_shape"])
    print("\n".join(f"{r['name']},{r['rate']},{r['distortion']},{r['negative_elbo']}" for r in rows))
    return 0
