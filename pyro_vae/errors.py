"""Errors a user can act on: the command line prints their message and exits 2, no traceback."""


class PyroVAEError(Exception):
    """Base class: the message says what was wrong and what to do."""


class DataError(PyroVAEError, ValueError):
    """A dataset is missing, corrupt, unknown, or outside the likelihood's support."""


class ConfigError(PyroVAEError, ValueError):
    """A flag, configuration value or argument is invalid, or they do not fit together (a ValueError, as
    Python's own functions raise for a bad value)."""


class ConfigTypeError(ConfigError, TypeError):
    """An argument of the wrong kind, such as a string where a TrainConfig belongs (a TypeError, as Python's
    own functions raise)."""


def os_error_line(error: OSError) -> str:
    """One line for a failed read or write (a full or read-only disk, a missing permission): what, where."""
    where = f" {error.filename}" if error.filename else ""
    return f"cannot read or write{where}: {error.strerror or error}"
