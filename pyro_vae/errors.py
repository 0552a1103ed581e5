"""Errors a user can act on: the command line prints their message and exits 2, no traceback.

A message names a setting as @name, its config field (`@kl_warmup`): from Python it reads `kl_warmup`, and
the command line writes the setting's flag there instead (`--kl-warmup`), so each reader is told what to change
in the words they used."""

import re
from typing import Callable

FIELD = re.compile(r"(?<![\w/.@-])@([a-z][a-z0-9_]*)")


class PyroVAEError(Exception):
    """Base class: the message says what was wrong and what to do."""

    def __str__(self) -> str:
        return self.naming(lambda name: name)

    def naming(self, setting: Callable[[str], str]) -> str:
        """The message with each setting marked @name written as `setting(name)`."""
        return FIELD.sub(lambda match: setting(match.group(1)), super().__str__())


class DataError(PyroVAEError, ValueError):
    """A dataset is missing, corrupt, unknown, or outside the likelihood's support."""


class ConfigError(PyroVAEError, ValueError):
    """A flag, configuration value or argument is invalid, or they do not fit together (a ValueError, as
    Python's own functions raise for a bad value)."""


class ConfigTypeError(ConfigError, TypeError):
    """An argument of the wrong kind, such as a string where a TrainConfig belongs (a TypeError, as Python's
    own functions raise)."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """An error's message in one line of at most `limit` characters: its first non-empty line, and the next
    ones while each ends with a colon ("Error while computing log_prob at site 'x':" then what), up to the
    tensor Pyro's validation errors print after them."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = lines[:1]
    for line in lines[1:]:
        if not kept[-1].endswith(":") or line.startswith(("tensor(", "[")):
            break
        kept.append(line)
    return " ".join(kept)[:limit]


def os_error_line(error: OSError) -> str:
    """One line for a failed read or write (a full or read-only disk, a missing permission): what, where."""
    where = f" {error.filename}" if error.filename else ""
    return f"cannot read or write{where}: {error.strerror or error}"
