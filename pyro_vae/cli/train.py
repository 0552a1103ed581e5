"""The command line of `python scripts/svi_train.py` (also installed as `pyro-vae-train`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from pyro_vae.cli.arguments import add_settings, config_from_args, with_flags
from pyro_vae.cli.parser import Parser
from pyro_vae.distributed import World, world_prefix
from pyro_vae.errors import ConfigError, PyroVAEError, os_error_line
from pyro_vae.training.checkpoint.resume import load_run_checkpoint, resumed_config
from pyro_vae.training.config import RESUME_SAFE, flag_name
from pyro_vae.training.loop import Abandoned, Interrupted, train


def build_parser() -> argparse.ArgumentParser:
    """The flags of every declared setting (`arguments.add_settings`) and the command's own."""
    p = Parser(
        description="Train a variational autoencoder with Pyro's SVI. Losses are negative ELBOs in nats per image.",
    )
    groups = add_settings(p)
    g = groups["machine and outputs"]
    g.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="continue the run in DIR from its checkpoint, exactly; flags given again must match the run's, "
        f"except {', '.join(map(flag_name, RESUME_SAFE))}",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar, only the per-epoch lines")
    return p


_NOT_SETTINGS = ("resume", "no_progress", "out")


def given_settings(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict:
    """The settings written on the command line, by name, leaving out the defaults."""
    unset = object()
    namespace = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != "help"})
    given = vars(parser.parse_args(argv, namespace))
    return {k: v for k, v in given.items() if v is not unset and k not in _NOT_SETTINGS}


def main(argv: list[str] | None = None) -> int:
    """Parse, train, and turn every user-facing error into one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.resume is None:
            train(config_from_args(args), progress=not args.no_progress)
        else:
            if args.out is not None:
                raise ConfigError("--resume DIR continues the run in DIR; leave out --out")
            checkpoint = load_run_checkpoint(Path(args.resume))
            config = resumed_config(checkpoint, given_settings(parser, argv))
            config = replace(config, out=args.resume)
            train(config, progress=not args.no_progress, checkpoint=checkpoint)
    except PyroVAEError as error:
        print(f"error: {world_prefix(World.described())}{with_flags(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # a full or read-only disk: each file is replaced only by a complete new one
        print(
            f"error: {world_prefix(World.described())}{os_error_line(error)}; the run folder keeps its last complete "
            "checkpoint (no file is ever half-written); make room or fix the permissions, then --resume",
            file=sys.stderr,
        )
        return 2
    except Interrupted as stop:
        if World.described().is_main:  # every rank stops alike; rank 0 says so
            print(str(stop), file=sys.stderr)
        return stop.status
    except Abandoned:
        print("interrupted at once (second Ctrl-C); the run folder holds the last checkpoint", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside the training loop: loading data, building the model, the final figures
        print(
            "interrupted (Ctrl-C) while not training (starting up, or writing the final figures); the run "
            "folder holds its last checkpoint, if one was written",
            file=sys.stderr,
        )
        return 130
    return 0
