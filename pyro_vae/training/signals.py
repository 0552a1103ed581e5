"""Stopping a run cleanly: Ctrl-C (SIGINT), SIGTERM or SIGHUP recorded as a flag that the loop reads between
two steps (every rank agreeing), and the message and exit status of a run stopped with its checkpoint written."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from pyro_vae.training.run import Run

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP stopped the run; a checkpoint was written first. `status` is the exit
    status a shell expects of that signal, 128 + its number (130, 143, 129); `folder` the run's folder, which
    holds that checkpoint."""

    def __init__(self, message: str, status: int = 128 + signal.SIGINT, folder: Path | None = None) -> None:
        super().__init__(message)
        self.status, self.folder = status, folder


class Abandoned(KeyboardInterrupt):
    """A second Ctrl-C while the run was stopping after the first: it stops at once, without a new checkpoint."""


def stop_message(run: Run, where: str, signum: int) -> Interrupted:
    """What stopped the run, where, and the command that resumes it; the exit status of that signal."""
    signum = signum or signal.SIGINT  # another rank's signal stopped this one
    command = "python" if run.world.size == 1 else f"torchrun --nproc-per-node {run.world.size}"
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    return Interrupted(
        f"interrupted ({name}) {where}; checkpoint written. "
        f"Resume with: {command} scripts/svi_train.py --resume {run.folder.path}",
        128 + signum,
        run.folder.path,
    )


@contextmanager
def interrupt_flag(under_torchrun: bool = False) -> Iterator[list[int]]:
    """While inside, the first Ctrl-C (SIGINT), SIGTERM or SIGHUP (what a cluster scheduler sends before it
    preempts a job, or a closed terminal) only records its number in flag[0], so the loop can stop between
    two steps and write a checkpoint; a second Ctrl-C interrupts at once. Under torchrun, which passes
    Ctrl-C on to its workers as a second SIGINT (or SIGTERM), every such signal only sets the flag: torchrun
    itself kills the workers if they have not stopped after its grace period."""
    flag = [0]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def second_press(signum, frame):
        raise Abandoned()

    def handler(signum, frame):
        flag[0] = flag[0] or signum
        if signum == signal.SIGINT and not under_torchrun:
            signal.signal(signal.SIGINT, second_press)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def agreed_flag(flag: list[int], run: Run) -> Callable[[], bool]:
    """Whether a stop signal came, as every rank agrees (a collective: every rank asks at the same step)."""
    if run.world.size == 1:
        return lambda: bool(flag[0])
    return lambda: bool(run.world.any(torch.tensor(bool(flag[0]), device=run.device)))
