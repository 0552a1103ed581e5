"""Long work says where it is: on a terminal a bar with the time left (tqdm); otherwise (output going to a
file or a pipe, as a long run is started) a line at most every LINE_SECONDS with what is done and the time
left, so a log file shows the work moving."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

LINE_SECONDS = 30.0  # between two progress lines when stderr is no terminal


def progress_bar(total: int, what: str, show: bool = True, unit: str = "image") -> tqdm | ProgressLines:
    """Progress over `total` units of `what` (pass its `update` as `progress`): a bar that goes away when done
    on a terminal, lines in a file; nothing without `show`."""
    if show and not sys.stderr.isatty():
        return ProgressLines(total, what, unit)
    return tqdm(total=total, desc=what, unit=unit, leave=False, disable=not show, file=sys.stderr)


class ProgressLines:
    """`update(n)` as tqdm's, writing "what: done / total units, elapsed, about T left" at most every
    LINE_SECONDS (and never raising where stderr cannot be written)."""

    def __init__(self, total: int, what: str, unit: str) -> None:
        self.total, self.what, self.unit = total, what, unit
        self.done, self.started = 0, time.monotonic()
        self.last = self.started

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LINE_SECONDS and self.done < self.total:
            self.last = now
            self._say(now - self.started)

    def _say(self, elapsed: float) -> None:
        left = elapsed * (self.total - self.done) / max(self.done, 1)
        line = f"{self.what}: {self.done:,} / {self.total:,} {self.unit}s, {minutes(elapsed)} so far, about {minutes(left)} left"
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError:
            pass

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


def minutes(seconds: float) -> str:
    """A duration as a person reads it: 42 s, 3.5 min, 2.1 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
