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
from contextlib import contextmanager
from typing import Callable, Iterator


def guarded_main(module: str) -> Callable[[], int]:
    """The `main` of the command module `module` (such as "pyro_vae.cli.train"), imported with Ctrl-C exiting
    at once: no exception is raised inside an import; and run with an output that cannot be written ending
    in one line (`output_errors_said`)."""
    with starting_up():
        main = importlib.import_module(module).main
    return functools.partial(output_errors_said, main)


@contextmanager
def starting_up() -> Iterator[None]:
    """While inside (a command's imports), Ctrl-C exits at once with one line and status 130."""
    signal.signal(signal.SIGINT, _exit_at_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def errors_said(main: Callable[[], int]) -> int:
    """main() as the scripts' commands end: a user-facing error in one line (exit 2), Ctrl-C in one line
    (exit 130), an unwritable output in one line (exit 2); how a benchmark's command runs."""
    from pyro_vae.cli.arguments import with_flags
    from pyro_vae.errors import PyroVAEError

    def reported() -> int:
        try:
            return main()
        except PyroVAEError as error:
            print(f"error: {with_flags(error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted (Ctrl-C); what was written is kept", file=sys.stderr)
            return 130

    return output_errors_said(reported)


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
