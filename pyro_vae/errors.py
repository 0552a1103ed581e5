"""Errors a user can act on: the command line prints their message and exits 2, no traceback."""


class PyroVAEError(Exception):
    """Base class: the message says what was wrong and what to do."""


class DataError(PyroVAEError):
    """A dataset is missing, corrupt, unknown, or outside the likelihood's support."""


class ConfigError(PyroVAEError):
    """A flag or configuration value is invalid, or flags do not fit together."""
