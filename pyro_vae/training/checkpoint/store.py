"""checkpoint.pt, the file: one people download and share, so it is checked like one before anything uses it.

The file (format 2) is one header line and a payload:

    pyro-vae checkpoint 2 <payload bytes> <SHA-256 of the payload, hex>\\n
    <payload: torch.save of the run's state>

`load` refuses a file whose payload does not match its length and checksum (corruption, truncation) before
unpickling it, unpickles with `weights_only=True` (tensors and plain containers, never code), and
`validation.check` compares everything in it with what its own config builds: the model's and Adam's
tensors (names, shapes, dtypes, finite values), the progress counters (ranges, a true permutation) and the
generators' states.
Every refusal is one ConfigError naming the file and what is wrong. Format 1 (a bare torch.save, written
before checksums) is still read, without the checksum.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import torch

from pyro_vae import files
from pyro_vae.core.parts import Parts
from pyro_vae.errors import first_line
from pyro_vae.training.checkpoint.payload import Checkpoint
from pyro_vae.training.checkpoint.validation import KEYS
from pyro_vae.training.checkpoint.values import CheckpointError

FORMAT = 2
MAGIC = b"pyro-vae checkpoint "
REQUIRED = {"format_version", *KEYS}  # the keys of a checkpoint's payload


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` as a format-2 file (header with length and checksum, then the payload), atomically."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT, **checkpoint.to_dict()}, buffer)
    payload = buffer.getvalue()
    header = MAGIC + f"{FORMAT} {len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()
    files.atomic_write(path, lambda f: f.write(header + payload))


def load(path: Path, parts: Parts = Parts()) -> Checkpoint:
    """The checked checkpoint in `path`: integrity (`payload`), safe unpickling, its format, then
    `Checkpoint.from_dict` (against the user's own `parts`, for a run trained with them)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    body = unpickle(payload(raw, path), path)
    if isinstance(body, dict):
        if "format_version" not in body:
            raise CheckpointError(f"{path} is not a complete checkpoint: missing format_version")
        if body["format_version"] not in (1, FORMAT):
            raise CheckpointError(
                f"{path} has format {body['format_version']!r}; this pyro-vae reads formats 1 and {FORMAT}"
            )
        body = {key: value for key, value in body.items() if key != "format_version"}
    return Checkpoint.from_dict(body, path, parts)


def position(path: Path) -> tuple[object, object]:
    """(epoch, step) of the checkpoint in `path`, read safely but without checking the rest: enough to see
    whether it changed since it was loaded."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    body = unpickle(payload(raw, path), path)
    return (body.get("epoch"), body.get("step")) if isinstance(body, dict) else (None, None)


def payload(raw: bytes, path: Path) -> bytes:
    """The payload of a checkpoint file's bytes, once its length and SHA-256 match its header's."""
    if raw.startswith(b"PK\x03\x04"):  # format 1: torch's zip file, no header (check() requires format_version 1)
        return raw
    line, newline, body = raw.partition(b"\n")
    match = re.fullmatch(rb"pyro-vae checkpoint (\d{1,3}) (\d{1,15}) ([0-9a-f]{64})", line)
    if not newline or match is None:
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint (empty, or its header is missing or damaged)")
    version, length, digest = int(match[1]), int(match[2]), match[3].decode()
    if version != FORMAT:
        raise CheckpointError(f"{path} has format {version}; this pyro-vae reads formats 1 and {FORMAT}")
    if len(body) != length:
        raise CheckpointError(
            f"{path} is truncated or has bytes added: {len(body)} bytes after the header, which says {length}"
        )
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(
            f"{path} is corrupt: its contents do not match the checksum written with them "
            "(the file changed after it was saved)"
        )
    return body


def unpickle(body: bytes, path: Path) -> object:
    """torch.load(weights_only=True) of the payload; a refusal says why in one line, never advising to load
    unsafely."""
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler's refusals and damaged archives raise many kinds
        text = str(error)
        if "weights_only" in text or "Weights only" in text:  # a refusal: name what was refused, not torch's advice
            found = re.search(r"GLOBAL ([\w.]+)|Unsupported operand \S+", text, re.I)
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain containers"
                f"{f' ({found[0]})' if found else ''}; it was not loaded, and nothing in it ran"
            ) from None
        raise CheckpointError(f"{path} cannot be unpacked ({type(error).__name__}: {first_line(error)})") from None
