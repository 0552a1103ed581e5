"""checkpoint.pt: a file people download and share, so it is checked like one before anything uses it.

The file (format 2) is one header line and a payload:

    pyro-vae checkpoint 2 <payload bytes> <SHA-256 of the payload, hex>\\n
    <payload: torch.save of the run's state>

`load` refuses a file whose payload does not match its length and checksum (corruption, truncation) before
unpickling it, unpickles with `weights_only=True` (tensors and plain containers, never code), and `check`
compares everything in it with what its own config builds: the model's and Adam's tensors (names, shapes,
dtypes, finite values), the progress counters (ranges, a true permutation) and the generators' states.
Every refusal is one ConfigError naming the file and what is wrong. Format 1 (a bare torch.save, written
before checksums) is still read, without the checksum.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from pathlib import Path

import torch

from pyro_vae import files
from pyro_vae.core.model import VAE
from pyro_vae.errors import ConfigError, PyroVAEError
from pyro_vae.training.config import TrainConfig

FORMAT = 2
MAGIC = b"pyro-vae checkpoint "
REQUIRED = {
    "format_version",
    "config",
    "model_state",
    "optimizer_state",
    "rng",
    "rng_other_ranks",
    "world_size",
    "progress",
    "epoch",
    "step",
}
PROGRESS = {"epoch", "step", "batch", "permutation", "loss_sum", "images", "seconds", "skipped", "metrics"}


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used as it is: corrupt, truncated, tampered with, or not one at all."""


def save(path: Path, state: dict) -> None:
    """Write `state` as a format-2 checkpoint (header with length and checksum, then the payload), atomically."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    header = MAGIC + f"{FORMAT} {len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()
    files.atomic_write(path, lambda f: f.write(header + payload))


def load(path: Path) -> dict:
    """The checked checkpoint in `path`: integrity (`payload`), safe unpickling, then `check`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    checkpoint = unpickle(payload(raw, path), path)
    check(checkpoint, path)
    return checkpoint


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
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise CheckpointError(f"{path} cannot be unpacked ({type(error).__name__}: {first[:200]})") from None


def check(checkpoint: object, path: Path) -> None:
    """Everything in `checkpoint` against what its own config builds; raises CheckpointError on the first
    difference."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint's dict")
    keys = set(checkpoint)
    missing, extra = REQUIRED - keys, keys - REQUIRED - {"local_optimizer_state"}
    if missing or extra:
        raise CheckpointError(
            f"{path} is not a complete checkpoint: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(sorted(map(str, missing)))}" if missing else "",
                    f"unexpected {', '.join(sorted(map(str, extra)))}" if extra else "",
                )
                if part
            )
        )
    if checkpoint["format_version"] not in (1, FORMAT):
        raise CheckpointError(
            f"{path} has format {checkpoint['format_version']!r}; this pyro-vae reads formats 1 and {FORMAT}"
        )
    config = _config(checkpoint["config"], path)
    vae = _model(config, checkpoint["model_state"], path)
    _check_tensors(
        checkpoint["model_state"], {k: (v.shape, v.dtype) for k, v in vae.state_dict().items()}, f"{path}: model_state"
    )
    table = vae.q.table.weight if vae.is_local else None
    _check_adam(
        checkpoint["optimizer_state"], [p for p in vae.parameters() if p is not table], f"{path}: optimizer_state"
    )
    if vae.is_local:
        if "local_optimizer_state" not in checkpoint:
            raise CheckpointError(f"{path}: a local-guide run's checkpoint lacks local_optimizer_state")
        _check_adam(checkpoint["local_optimizer_state"], [table], f"{path}: local_optimizer_state")
    elif "local_optimizer_state" in checkpoint:
        raise CheckpointError(
            f"{path} holds a local_optimizer_state, but its config's guide ({config.model.guide}) has none"
        )
    _check_progress(checkpoint, config, path)
    _check_generators(checkpoint, path)


def _config(values: object, path: Path) -> TrainConfig:
    if not isinstance(values, dict) or not isinstance(values.get("model"), dict):
        raise CheckpointError(f'{path}: its config is not a dict of settings with the model\'s nested under "model"')
    try:
        return TrainConfig.from_dict(values)
    except PyroVAEError as error:
        raise CheckpointError(f"{path}: its config is refused: {error}") from None


def _model(config: TrainConfig, state: object, path: Path) -> VAE:
    """The VAE the config describes, to compare the checkpoint with: on the meta device (shapes and dtypes
    without memory) where the guide allows, else on the CPU, once its size is known to be of the order of
    the weights the file holds (a tampered config cannot make this allocate more)."""
    sizes = [config.model.x_dim, *config.model.hidden, config.model.z_dim]
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))  # one network's weight matrices
    held = sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor)) if isinstance(state, dict) else 0
    if weights > held:
        raise CheckpointError(
            f"{path}: its config describes a model with more weights ({weights:,}) than the file holds ({held:,})"
        )
    try:
        with torch.device("meta"):
            return VAE(config.model)
    except Exception:  # Pyro's autoregressive flows read their masks' values, which meta tensors lack
        pass
    try:
        return VAE(config.model)
    except Exception as error:
        raise CheckpointError(f"{path}: its config describes no buildable model ({type(error).__name__})") from None


def _check_tensors(state: object, expected: dict[str, tuple[torch.Size, torch.dtype]], where: str) -> None:
    """`state` has exactly the expected names, each a finite tensor of the expected shape and dtype."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} is a {type(state).__name__}, not a dict of tensors")
    missing, extra = set(expected) - set(state), set(state) - set(expected)
    if missing or extra:
        raise CheckpointError(
            f"{where} does not match the config's model: missing {sorted(missing)}, unexpected "
            f"{sorted(map(str, extra))}"
        )
    for name, (shape, dtype) in expected.items():
        _check_tensor(state[name], shape, dtype, f"{where}[{name!r}]")


def _check_tensor(value: object, shape: tuple, dtype: torch.dtype, where: str) -> None:
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_quantized:
        raise CheckpointError(f"{where} is a {type(value).__name__}, not a dense tensor")
    if tuple(value.shape) != tuple(shape) or value.dtype != dtype:
        raise CheckpointError(
            f"{where} has shape {tuple(value.shape)} and dtype {value.dtype}; the config's model "
            f"needs {tuple(shape)} and {dtype}"
        )
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise CheckpointError(f"{where} holds NaN or infinite values")


def _check_adam(state: object, parameters: list[torch.Tensor], where: str) -> None:
    """A torch Adam (or SparseAdam) state_dict for exactly `parameters`: one group listing them in order, and
    per parameter a step >= 0 and moments of its shape (the second non-negative), all finite."""
    if not isinstance(state, dict) or set(state) != {"state", "param_groups"}:
        raise CheckpointError(f"{where} is not an optimizer's state (a dict of state and param_groups)")
    groups = state["param_groups"]
    if (
        not isinstance(groups, list)
        or len(groups) != 1
        or not isinstance(groups[0], dict)
        or groups[0].get("params") != list(range(len(parameters)))
    ):
        raise CheckpointError(f"{where}: its parameter groups do not match the config's model")
    for key, kind in (("lr", float), ("eps", float), ("betas", (tuple, list))):
        if not isinstance(groups[0].get(key), kind):
            raise CheckpointError(
                f"{where}: its parameter group's {key} is missing or not a {getattr(kind, '__name__', 'pair')}"
            )
    moments = state["state"]
    if not isinstance(moments, dict) or not set(moments) <= set(range(len(parameters))):
        raise CheckpointError(f"{where}: its per-parameter states do not match the config's model")
    for index, entry in moments.items():
        if not isinstance(entry, dict) or set(entry) != {"step", "exp_avg", "exp_avg_sq"}:
            raise CheckpointError(f"{where}: parameter {index}'s state is not Adam's (step, exp_avg, exp_avg_sq)")
        step = entry["step"]  # Adam: a float32 scalar tensor; SparseAdam (the local guide's table): an int
        if not _is_count(step):
            _check_tensor(step, (), torch.float32, f"{where}: parameter {index}'s step")
            if step < 0:
                raise CheckpointError(f"{where}: parameter {index}'s step is negative")
        for name in ("exp_avg", "exp_avg_sq"):
            _check_tensor(
                entry[name], parameters[index].shape, parameters[index].dtype, f"{where}: parameter {index}'s {name}"
            )
        if (entry["exp_avg_sq"] < 0).any():
            raise CheckpointError(f"{where}: parameter {index}'s exp_avg_sq has negative values")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _check_progress(checkpoint: dict, config: TrainConfig, path: Path) -> None:
    """The counters in range and agreeing with each other; the permutation a true one; a record per epoch."""
    progress = checkpoint["progress"]
    if (
        not isinstance(progress, dict)
        or not set(progress) <= PROGRESS
        or not {"epoch", "step", "metrics"} <= set(progress)
    ):
        raise CheckpointError(f"{path}: its progress is not a dict of {', '.join(sorted(PROGRESS))}")
    for name in ("epoch", "step", "batch", "images", "skipped"):
        if name in progress and not _is_count(progress[name]):
            raise CheckpointError(f"{path}: progress {name} is {progress[name]!r}, not a count")
    for name, least in (("loss_sum", -math.inf), ("seconds", 0.0)):  # a density's loss can be negative
        value = progress.get(name, 0.0)
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not (math.isfinite(value) and value >= least)
        ):
            raise CheckpointError(
                f"{path}: progress {name} is {value!r}, not a finite number" + (" >= 0" if least == 0 else "")
            )
    epoch = progress["epoch"]
    if checkpoint["epoch"] != epoch or checkpoint["step"] != progress["step"] or epoch > config.epochs:
        raise CheckpointError(
            f"{path}: its progress is inconsistent (epoch {checkpoint['epoch']!r}/{epoch!r} of "
            f"{config.epochs}, step {checkpoint['step']!r}/{progress['step']!r})"
        )
    metrics = progress["metrics"]
    if (
        not isinstance(metrics, list)
        or len(metrics) != epoch
        or not all(isinstance(m, dict) for m in metrics)
        or [m.get("epoch") for m in metrics] != list(range(1, epoch + 1))
    ):
        raise CheckpointError(
            f"{path}: its progress holds {len(metrics) if isinstance(metrics, list) else 'no'} "
            f"epoch records for {epoch} finished epochs"
        )
    permutation = progress.get("permutation")
    if permutation is not None:
        if (
            not isinstance(permutation, torch.Tensor)
            or permutation.dtype != torch.int64
            or permutation.dim() != 1
            or not torch.equal(permutation.sort().values, torch.arange(len(permutation)))
        ):
            raise CheckpointError(f"{path}: progress permutation is not a permutation of the training images")
        if progress.get("batch", 0) > -(-len(permutation) // config.batch_size):
            raise CheckpointError(f"{path}: progress batch {progress['batch']} lies past the epoch's end")


def _check_generators(checkpoint: dict, path: Path) -> None:
    """The generators' states have the types and sizes `resume.set_rng_states` restores."""
    world_size, others = checkpoint["world_size"], checkpoint["rng_other_ranks"]
    if not _is_count(world_size) or world_size < 1 or not isinstance(others, list) or len(others) != world_size - 1:
        raise CheckpointError(f"{path}: world_size {world_size!r} and the other ranks' generator states do not agree")
    for index, states in enumerate([checkpoint["rng"], *others]):
        where = f"{path}: the generator states of rank {index}"
        if not isinstance(states, dict) or set(states) != {"torch", "cuda", "numpy", "python"}:
            raise CheckpointError(f"{where} are not torch, cuda, numpy and python states")
        _check_tensor(states["torch"], torch.get_rng_state().shape, torch.uint8, f"{where}: torch")
        if not isinstance(states["cuda"], list) or not all(
            isinstance(s, torch.Tensor) and s.dtype == torch.uint8 for s in states["cuda"]
        ):
            raise CheckpointError(f"{where}: cuda is not a list of byte tensors")
        numpy_state = states["numpy"]
        if (
            not isinstance(numpy_state, list)
            or len(numpy_state) != 5
            or numpy_state[0] != "MT19937"
            or not _is_count(numpy_state[2])
            or numpy_state[2] > 624
            or not isinstance(numpy_state[4], float)
        ):
            raise CheckpointError(f"{where}: numpy is not a Mersenne Twister state")
        _check_tensor(numpy_state[1], (624,), torch.int64, f"{where}: numpy keys")
        if not ((numpy_state[1] >= 0) & (numpy_state[1] < 2**32)).all():
            raise CheckpointError(f"{where}: numpy keys are not 32-bit words")
        python_state = states["python"]
        if (
            not isinstance(python_state, list)
            or len(python_state) != 3
            or not isinstance(python_state[1], (tuple, list))
            or len(python_state[1]) != 625
            or not all(_is_count(w) and w < 2**32 or w == 624 for w in python_state[1])
        ):
            raise CheckpointError(f"{where}: python is not a Mersenne Twister state")
