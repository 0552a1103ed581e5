"""Ctrl-C while a command starts: Python spends a second or more importing PyTorch and Pyro, and a
KeyboardInterrupt raised inside an extension module's initialization can end in a native abort
("terminate called after throwing an instance of 'pybind11::error_already_set'") or a traceback. Every entry
point, the `scripts/*.py` files and the installed commands (`pyro-vae-train`, `pyro-vae-evaluate`,
`pyro-vae-sample`) alike, imports its command through `guarded_main`, so that a Ctrl-C then exits at once, with
one line and status 130, and Ctrl-C has Python's usual handling again once the imports are done. This module
and the package's `__init__` import nothing heavy, so the guard is set before PyTorch loads."""

import functools
import importlib
import os
import signal
import sys
from typing import Callable


def guarded_main(module: str) -> Callable[[], int]:
    """The `main` of the command module `module` (such as "pyro_vae.cli.train"), imported with Ctrl-C exiting
    at once: no exception is raised inside an import; and run with an output that cannot be written ending
    in one line (`output_errors_said`)."""
    signal.signal(signal.SIGINT, _exit_at_once)
    main = importlib.import_module(module).main
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return functools.partial(output_errors_said, main)


def output_errors_said(main: Callable[[], int]) -> int:
    """main(), with stdout or stderr that cannot be written (a full disk, `> /dev/full`, a closed pipe) ending
    it in one line on stderr where stderr still takes one, and exit status 2: never a traceback, and what the
    command wrote into files (its run folder, its report) stays."""
    try:
        status = main()
        sys.stdout.flush()
        return status
    except OSError as error:
        _silence(sys.stdout)  # nothing left for Python's exit to flush into a stream that fails
        try:
            print(
                f"error: cannot write the command's output ({error.strerror or error}); the files it wrote are kept",
                file=sys.stderr,
                flush=True,
            )
        except OSError:
            _silence(sys.stderr)
        return 2


def _silence(stream) -> None:
    os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


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
