"""Every command's flags, made from the settings' declarations (`settings.setting`): one flag per declared
field of the command's config (TrainConfig with its ModelConfig, SweepConfig, CompareConfig, EvaluateConfig,
SampleConfig), its help text with the default, its choices and type; the config built back from the parsed
flags; a library error that names a field (@name), re-worded with its flag.

A command's config that shares a setting with training declares it with `settings.reuse`, so the flag, its
range and its message are the training command's."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import Field
from typing import Iterable, TypeVar

from pyro_vae.cli.parser import Parser
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import FIELD, PyroVAEError
from pyro_vae.settings import declared, flag_of
from pyro_vae.training.config import TrainConfig, flag_name

GROUPS = ("data", "model", "training", "evaluation", "machine and outputs")  # the training command's --help
T = TypeVar("T")


def sizes(text: str) -> tuple[int, ...]:
    """Comma-separated whole numbers such as 400 or 200,200."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as 400 or 200,200, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive integers, got {text!r}")
    return values


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type = TrainConfig,
    only: Iterable[str] | None = None,
    defaults: dict[str, object] | None = None,
) -> dict[str, argparse._ArgumentGroup]:
    """One flag for each declared field of `cls` (and of its nested ModelConfig, under "model") that has one,
    `only` those named if given, with the command's own `defaults` where it has them, in the --help groups the
    declarations name; returns the groups, for flags of the command's own."""
    wanted = None if only is None else set(only)
    model = cls().model if has_model(cls) else None  # the defaults of the nested model, the command's own
    flags = [
        (owner, f, f.metadata["group"] or group)
        for owner, group in _declaring(cls)
        for f in declared(owner)
        if flag_of(f) is not None and (wanted is None or f.name in wanted)
    ]
    named = [name for name in GROUPS if any(group == name for *_, group in flags)]
    named += [group for *_, group in flags if group is not None and group not in named]
    groups = {name: parser.add_argument_group(name) for name in named}
    for owner, f, group in flags:
        default = getattr(model, f.name) if owner is ModelConfig else f.default
        given = f.name in (defaults or {})
        where = parser if group is None else groups[group]
        hint = typing.get_type_hints(owner)[f.name]
        where.add_argument(*_names(f), **_argument(f, hint, defaults[f.name] if given else default, given))
    return groups


def settings_parser(cls: type, description: str) -> Parser:
    """A command's parser: one-line errors (`parser.Parser`), and a flag for every declared field of `cls`."""
    parser = Parser(description=description)
    add_settings(parser, cls)
    return parser


def config_from_args(args: argparse.Namespace, cls: type[T] = TrainConfig, **fixed: object) -> T:
    """The `cls` config the parsed flags describe (the nested model's fields among them), with `fixed` values."""
    given = {f.name: _value(getattr(args, f.name)) for f in declared(cls) if hasattr(args, f.name)} | fixed
    if has_model(cls) and "model" not in given:
        model = cls().model
        chosen = {f.name: _value(getattr(args, f.name)) for f in declared(ModelConfig) if hasattr(args, f.name)}
        given["model"] = dataclasses.replace(model, **chosen)
    return cls(**given)


def _value(parsed: object) -> object:
    """A parsed value as the config holds it: the words of a tuple setting as a tuple."""
    return tuple(parsed) if isinstance(parsed, list) else parsed


def with_flags(error: PyroVAEError) -> str:
    """The error's message with each setting it names (@name) written as its flag: a training setting's own
    flag, else --name (a field of a command's own config, as `compare`'s and `sweep`'s are)."""
    return error.naming(command_flag)


def command_flag(name: str) -> str:
    flag = flag_name(name)
    return flag if flag.startswith("--") else "--" + name.replace("_", "-")


def _declaring(cls: type) -> list[tuple[type, str | None]]:
    """The settings dataclasses whose fields are `cls`'s flags, with the --help group of fields naming none."""
    return [*([(ModelConfig, "model")] if has_model(cls) else []), (cls, None)]


def has_model(cls: type) -> bool:
    """Whether the settings dataclass `cls` nests a ModelConfig (as `model`), whose flags are its flags too."""
    return any(f.name == "model" for f in dataclasses.fields(cls))


def _names(f: Field) -> tuple[str, ...]:
    """add_argument's names: the flag (a positional's name alone), and dest where it differs."""
    return (f.name,) if f.metadata["positional"] else (flag_of(f),)


def _argument(f: Field, hint: object, default: object, own_default: bool = False) -> dict:
    """add_argument's options for the field: a switch for a bool, else its type, choices, nargs and default."""
    meta = f.metadata
    text = FIELD.sub(lambda match: command_flag(match.group(1)), meta["help"]).replace("%", "%%")
    options = {} if meta["positional"] else {"dest": f.name}
    if hint is bool:  # a switch that may change on resume, or is on by default, can be switched off: --no-<flag>
        action = argparse.BooleanOptionalAction if meta["on_resume"] or default else "store_true"
        return dict(options, action=action, default=default, help=text)
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kind = next(t for t in kinds if t is not type(None))
    if typing.get_origin(kind) is tuple:
        kind = typing.get_args(kind)[0] if meta["nargs"] is not None else sizes
    shown = meta["default_text"] if meta["default_text"] is not None and not own_default else None
    shown = shown if shown is not None else _shown(default, meta["nargs"])
    options.update(type=kind, default=default, help=text if meta["positional"] else f"{text} (default: {shown})")
    choices = meta["cli_choices"] or meta["choices"]
    if choices is not None:
        options.update(choices=choices, type=int if kind is int else str)
    for name in ("metavar", "nargs", "const"):
        if meta[name] is not None:
            options[name] = meta[name]
    return options


def _shown(default: object, nargs: int | str | None) -> str:
    """A default as it would be typed: 200,200 for sizes, words for a tuple given word by word."""
    if isinstance(default, tuple):
        return (" " if nargs is not None else ",").join(map(str, default)) if default else "none"
    return str(default)
