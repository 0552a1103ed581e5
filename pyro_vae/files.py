"""Writing files so that a crash never leaves a half-written one (temporary file, fsync, rename), and reading
the JSON lines back."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

_UMASK = os.umask(0)  # reading the umask means setting it: read it once, put it back
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write(file)` to a temporary file in path's folder, fsync it, rename it onto path.

    A reader sees the old file or the new one, never a part of either.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_jsonl(path: Path, records: list) -> None:
    """Replace path with one JSON line per record, atomically."""
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one JSON line and fsync, so a finished epoch's metrics survive a crash."""
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list:
    """The records of a file of JSON lines (as write_jsonl and append_jsonl write them; metrics.jsonl)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of equal keys as a CSV file with a header, through an atomic write."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(path), lambda f: f.write(text.getvalue().encode()))
