"""Ctrl-C while a command starts: Python spends a second or more importing PyTorch and Pyro, and a
KeyboardInterrupt raised inside an extension module's initialization can end in a native abort
("terminate called after throwing an instance of 'pybind11::error_already_set'") or a traceback. Every entry
point, the `scripts/*.py` files and the installed commands (`pyro-vae-train`, `pyro-vae-evaluate`,
`pyro-vae-sample`) alike, imports its command through `guarded_main`, so that a Ctrl-C then exits at once, with
one line and status 130, and Ctrl-C has Python's usual handling again once the imports are done. This module
and the package's `__init__` import nothing heavy, so the guard is set before PyTorch loads."""

import importlib
import os
import signal
import sys
from typing import Callable


def guarded_main(module: str) -> Callable[[], int]:
    """The `main` of the command module `module` (such as "pyro_vae.cli.train"), imported with Ctrl-C exiting
    at once: no exception is raised inside an import."""
    signal.signal(signal.SIGINT, _exit_at_once)
    main = importlib.import_module(module).main
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return main


def train() -> int:
    """`pyro-vae-train`: scripts/svi_train.py, installed."""
    return guarded_main("pyro_vae.cli.train")()


def evaluate() -> int:
    """`pyro-vae-evaluate`: scripts/evaluate.py, installed."""
    return guarded_main("pyro_vae.cli.evaluate")()


def sample() -> int:
    """`pyro-vae-sample`: scripts/sample.py, installed."""
    return guarded_main("pyro_vae.cli.sample")()


def _exit_at_once(signum, frame) -> None:
    print("interrupted (Ctrl-C) while starting up; nothing was written", file=sys.stderr, flush=True)
    os._exit(130)
