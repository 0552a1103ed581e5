"""Settings dataclasses from plain JSON values (a `config.json`, a dict): unknown keys and values of the
wrong type are refused in one line that names them, before any of them is used."""

from __future__ import annotations

import types
import typing
from dataclasses import fields
from typing import Any, TypeVar

from pyro_vae.errors import ConfigError

T = TypeVar("T")


def from_values(cls: type[T], values: Any, where: str) -> T:
    """cls(**values) after checking every key and value against cls's fields and their type hints;
    nested settings dataclasses are built from their dicts the same way. `where` names them in messages."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a JSON object of settings, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(map(repr, unknown))}; known: {', '.join(names)}")
    return cls(**{name: _checked(value, hints[name], f"{where}.{name}") for name, value in values.items()})


def _checked(value: Any, hint: Any, where: str) -> Any:
    """value as type `hint` (int, float, bool, str, a tuple of ints, a settings dataclass, or X | None)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    kind = next(t for t in options if t is not type(None))
    if hasattr(kind, "__dataclass_fields__"):
        return value if isinstance(value, kind) else from_values(kind, value, where)
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)) and all(_is_int(v) for v in value):
        return tuple(value)
    if kind is float and (_is_int(value) or isinstance(value, float)):
        return float(value)
    if (kind is int and _is_int(value)) or (kind in (bool, str) and isinstance(value, kind)):
        return value
    expected = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, "a list of whole numbers"
    )
    raise ConfigError(f"{where} must be {expected}" + (" or null" if len(options) > 1 else "") + f", got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
