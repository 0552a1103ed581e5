"""Settings dataclasses from plain JSON values (a `config.json`, a dict): unknown keys and values of the
wrong type are refused in one line that names them, before any of them is used."""

from __future__ import annotations

import functools
import numbers
import types
import typing
from dataclasses import Field, field, fields
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
        return value if abs(value) > 1e308 else float(value)  # a huge int stays as it is: its range check says so
    if (kind is int and _is_int(value)) or (kind in (bool, str) and isinstance(value, kind)):
        return value
    expected = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, "a list of whole numbers"
    )
    raise ConfigError(
        f"{where} must be {expected}" + (" or null" if len(options) > 1 else "") + f", got {quoted(value)}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def setting(
    default: Any,
    help: str,
    *,
    group: str | None = None,
    flag: str | None = "",
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    on_resume: bool = False,
    derived: bool = False,
    metavar: str | tuple[str, ...] | None = None,
    default_text: str | None = None,
    cli_choices: tuple | None = None,
    nargs: int | str | None = None,
    const: Any = None,
    positional: bool = False,
) -> Any:
    """A dataclass field declared once with everything the checks and the commands need: its help text
    (settings are named @name in it), its `choices` or the range [low, high] (open at either end with
    open_low/open_high; every entry of a tuple), whether it may change when a run is resumed, and whether it
    is `derived` (set by the library from the data, never given). How a command shows it, where that is not
    made from the rest: its --help `group`, its `flag` ("" for --field-name), `metavar`, `nargs` (a tuple's
    entries as separate words; "?" with `const`, the value of the flag given alone), `positional`, and how its
    default reads (`default_text`)."""
    metadata = dict(
        help=help, group=group, flag=flag, choices=choices, low=low, high=high, open_low=open_low,
        open_high=open_high, on_resume=on_resume, derived=derived, metavar=metavar, default_text=default_text,
        cli_choices=cli_choices, nargs=nargs, const=const, positional=positional,
    )  # fmt: skip
    return field(default=default, metadata=metadata)


def reuse(cls: type, name: str, **changes: Any) -> Any:
    """The declaration of `cls`'s field `name` for another settings dataclass (a command's own), with
    `changes` to its default or metadata: one declaration, one range, one message, wherever it is given."""
    declared_field = next(f for f in declared(cls) if f.name == name)
    default = changes.pop("default", declared_field.default)
    return field(default=default, metadata={**declared_field.metadata, **changes})


def declared(cls: type) -> list[Field]:
    """The fields of a settings dataclass that carry a declaration (`setting`)."""
    return [f for f in fields(cls) if "help" in f.metadata]


def flag_of(f: Field) -> str | None:
    """The field's command-line flag (its name, for a positional one), or None if no command sets it."""
    flag = f.metadata["flag"]
    if f.metadata["derived"] or flag is None:
        return None
    if f.metadata["positional"]:
        return f.name
    return flag or "--" + f.name.replace("_", "-")


def check_declared(config: Any) -> None:
    """Every declared field of `config` of its declared type (a whole number where the field holds one, never
    2.5), inside its choices and range; a value of None (where the field allows it) means "not given" and is
    not checked further. Raises a ConfigError naming the first field outside (as @name)."""
    hints = _hints(type(config))
    for f in declared(type(config)):
        value = getattr(config, f.name)
        _check_type(f.name, value, hints[f.name])
        _check_field(f, value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_type(name: str, value: Any, hint: Any) -> None:
    """`value` of the kind `hint` names: a whole number for int (not a bool), a number for float, true or
    false for bool, a string for str, a tuple of such for tuple[...], None where the hint allows it."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return
    kind = next(t for t in options if t is not type(None))
    items, entry = (value, typing.get_args(kind)[0]) if typing.get_origin(kind) is tuple else ((value,), kind)
    if typing.get_origin(kind) is tuple and not isinstance(value, tuple):
        items = (value,)  # not a tuple at all: refused below as its entry kind would be
        entry = tuple
    for item in items:
        if not _is_kind(item, entry):
            expected = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(
                entry, "a tuple"
            )
            raise ConfigError(f"@{name} must be {expected}, got {quoted(item)}")


def _is_kind(value: Any, kind: Any) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, kind) if isinstance(kind, type) else True


def quoted(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters (with how long it was) so that a message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text):,} characters)"


def whole_number(name: str, value: object, low: int, high: int) -> int:
    """`value` if it is a whole number in [low, high], else a one-line ConfigError naming it: how a function's
    argument (or a count that no declared field holds) is bounded, in the words `setting`'s ranges use."""
    if not _is_int(value) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low:,} to {high:,}, got {quoted(value)}")
    return value


def check_values(cls: type, **values: Any) -> None:
    """Each value inside the choices and range declared for the field of that name in `cls`: how a command
    that has no such config (evaluate, sample, ...) holds its --seed or --threads to the training command's
    bounds. Raises a ConfigError naming the first value outside (as @name)."""
    fields_by_name = {f.name: f for f in declared(cls)}
    for name, value in values.items():
        _check_field(fields_by_name[name], value)


def _check_field(f: Field, value: Any) -> None:
    meta = f.metadata
    for item in value if isinstance(value, tuple) else () if value is None else (value,):
        if meta["choices"] is not None and item not in meta["choices"]:
            raise ConfigError(f"@{f.name} must be one of {', '.join(map(str, meta['choices']))}, got {quoted(item)}")
        if not _in_range(item, meta):
            whole = isinstance(item, numbers.Integral)
            raise ConfigError(f"@{f.name} must be {_range_text(meta, whole)}, got {quoted(item)}")


def _in_range(value: Any, meta: dict) -> bool:
    if meta["low"] is None and meta["high"] is None:
        return True
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value != value:  # NaN
        return False
    low, high = meta["low"], meta["high"]
    above = low is None or (value > low if meta["open_low"] else value >= low)
    below = high is None or (value < high if meta["open_high"] else value <= high)
    return above and below and abs(value) != float("inf")


def _range_text(meta: dict, whole: bool) -> str:
    """The range in words: "a whole number from 1 to 10,000,000", "a number in (0, 10]", ..."""
    low, high = meta["low"], meta["high"]
    if whole and not (meta["open_low"] or meta["open_high"]):
        if high is None:
            return f"a whole number, at least {low:,}"
        return f"a whole number from {low:,} to {high:,}"
    left, right = "(" if meta["open_low"] or low is None else "[", ")" if meta["open_high"] or high is None else "]"
    return f"a number in {left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
