"""The training flags, made from the settings' declarations (`settings.setting`) of ModelConfig and
TrainConfig: one flag per declared field, its help text with the default, its choices and type; the
config built back from the parsed flags; a library error that names a field, re-worded with its flag."""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import Field

from pyro_vae.core.model import ModelConfig
from pyro_vae.errors import PyroVAEError
from pyro_vae.settings import declared, flag_of
from pyro_vae.training.config import TrainConfig, flag_name

GROUPS = ("data", "model", "training", "evaluation", "machine and outputs")


def sizes(text: str) -> tuple[int, ...]:
    """Comma-separated whole numbers such as 400 or 200,200."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as 400 or 200,200, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive integers, got {text!r}")
    return values


def add_settings(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One flag for each declared field of ModelConfig and TrainConfig that has one, in GROUPS; returns
    the groups, for flags of the command's own."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for cls in (ModelConfig, TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in declared(cls):
            if flag_of(f) is not None:
                groups[f.metadata["group"]].add_argument(flag_of(f), dest=f.name, **_argument(f, hints[f.name]))
    return groups


def _argument(f: Field, hint: object) -> dict:
    """add_argument's options for the field: a switch for a bool, else its type, choices and default."""
    meta = f.metadata
    default = meta["default_text"] if meta["default_text"] is not None else f.default
    if hint is bool:  # a switch that may change on resume can also be switched off there: --no-<flag>
        action = argparse.BooleanOptionalAction if meta["on_resume"] else "store_true"
        return dict(action=action, default=False, help=meta["help"])
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kind = next(t for t in options if t is not type(None))
    parse = sizes if typing.get_origin(kind) is tuple else kind
    options = dict(type=parse, default=f.default, help=f"{meta['help']} (default: {default})".replace("%", "%%"))
    choices = meta["cli_choices"] or meta["choices"]
    if choices is not None:
        options.update(choices=choices, type=int if kind is int else str)
    if meta["metavar"] is not None:
        options["metavar"] = meta["metavar"]
    return options


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the parsed flags describe."""
    model = ModelConfig(**{f.name: getattr(args, f.name) for f in declared(ModelConfig) if flag_of(f)})
    return TrainConfig(model=model, **{f.name: getattr(args, f.name) for f in declared(TrainConfig) if flag_of(f)})


def with_flags(error: PyroVAEError) -> str:
    """The error's message with each setting it names (@name) written as its flag: a training setting's own
    flag, else --name (a field of a command's own config, as `compare`'s and `sweep`'s are)."""
    return error.naming(command_flag)


def command_flag(name: str) -> str:
    flag = flag_name(name)
    return flag if flag.startswith("--") else "--" + name.replace("_", "-")
