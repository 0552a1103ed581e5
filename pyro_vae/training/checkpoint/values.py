"""What every check of a checkpoint is built from: its one error, and the checks of a tensor and of a count."""

from __future__ import annotations

import torch

from pyro_vae.errors import ConfigError


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used as it is: corrupt, truncated, tampered with, or not one at all."""


def check_tensor(value: object, shape: tuple, dtype: torch.dtype, where: str) -> None:
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_quantized:
        raise CheckpointError(f"{where} is a {type(value).__name__}, not a dense tensor")
    if tuple(value.shape) != tuple(shape) or value.dtype != dtype:
        raise CheckpointError(
            f"{where} has shape {tuple(value.shape)} and dtype {value.dtype}; the config's model "
            f"needs {tuple(shape)} and {dtype}"
        )
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise CheckpointError(f"{where} holds NaN or infinite values")


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53
