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

from pyro_vae import data, files
from pyro_vae.cli.arguments import with_flags
from pyro_vae.cli.parser import Parser
from pyro_vae.core.model import LIKELIHOODS, ModelConfig
from pyro_vae.errors import PyroVAEError, os_error_line
from pyro_vae.evaluation import plots
from pyro_vae.experiments import beta_sweep
from pyro_vae.training.loop import Interrupted
from pyro_vae.training.report.folder import new_run_dir


def parse(argv: list[str] | None) -> tuple[beta_sweep.SweepConfig, argparse.Namespace]:
    d = beta_sweep.SweepConfig()
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--betas", type=float, nargs="+", default=list(d.betas), help="KL weights (default: %(default)s)")
    p.add_argument("--no-autoencoder", action="store_true", help="leave out the point-mass guide at beta 0")
    p.add_argument("--dataset", choices=data.DATASETS, default=d.dataset)
    p.add_argument("--data-dir", default=None, help=f"folder of the real data (default: ${data.DATA_DIR_ENV})")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default=d.model.likelihood, help="(default: %(default)s)")
    p.add_argument("--z-dim", type=int, default=d.model.z_dim, help="(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="per model (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    p.add_argument(
        "--samples",
        type=int,
        default=d.samples,
        help="z samples per test image for the distortion (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for PyTorch (default: the cores not busy with other work)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder; an earlier sweep's folder resumes it (default: a new runs/<timestamp>)",
    )
    args = p.parse_args(argv)
    model = ModelConfig(z_dim=args.z_dim, likelihood=args.likelihood)
    config = beta_sweep.SweepConfig(
        betas=tuple(args.betas),
        autoencoder=not args.no_autoencoder,
        dataset=args.dataset,
        data_dir=args.data_dir,
        model=model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        samples=args.samples,
        threads=args.threads,
    )
    return config, args


def main(argv: list[str] | None = None) -> int:
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        config, args = parse(argv)
        out = new_run_dir(args.out, reuse=True)
        log(f"beta sweep on {config.dataset}: {len(config.points())} models of {config.epochs} epochs; writing {out}")
        points = beta_sweep.sweep(config, out, log)
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
