"""Ctrl-C while a command starts: Python spends a second or more importing PyTorch and Pyro, and a
KeyboardInterrupt raised inside an extension module's initialization can end in a native abort
("terminate called after throwing an instance of 'pybind11::error_already_set'") or a traceback. Each script
imports its command through `guarded_main`, so that a Ctrl-C then exits at once, with one line and status
130, and Ctrl-C has Python's usual handling again once the imports are done."""

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


def _exit_at_once(signum, frame) -> None:
    print("interrupted (Ctrl-C) while starting up; nothing was written", file=sys.stderr, flush=True)
    os._exit(130)
