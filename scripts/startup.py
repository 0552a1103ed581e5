"""Ctrl-C while a command starts: Python spends a second or more importing PyTorch and Pyro, and a
KeyboardInterrupt raised inside an extension module's initialization aborts the interpreter natively
("terminate called after throwing an instance of 'pybind11::error_already_set'"). Each script installs this
handler before its imports, so that a Ctrl-C then exits at once, with one line and status 130, and hands
Ctrl-C back to Python's usual handling once the imports are done."""

import os
import signal
import sys


def _exit_at_once(signum, frame) -> None:
    print("interrupted (Ctrl-C) while starting up; nothing was written", file=sys.stderr, flush=True)
    os._exit(130)


def guard_imports() -> None:
    """Until `imports_done`, Ctrl-C exits at once (no exception is raised inside an import)."""
    signal.signal(signal.SIGINT, _exit_at_once)


def imports_done() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
