"""The commands' argument parser: argparse, with every error in one line, a close flag named for a typo, and
a pointer to --help in place of the usage block."""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that never abbreviates flags and says what went wrong in one line:
    `svi_train.py: error: unrecognized arguments: --epcohs 2 (did you mean --epochs?); see svi_train.py --help`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self.suggestion(message)}; see {self.prog} --help\n")

    def suggestion(self, message: str) -> str:
        """' (did you mean --epochs?)' for the unknown flags of `message` that are close to a real one."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        flags = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        unknown = [word.split("=")[0] for word in message.split(":", 1)[1].split() if word.startswith("--")]
        close = [match for word in unknown for match in difflib.get_close_matches(word, flags, n=1, cutoff=0.75)]
        return f" (did you mean {', '.join(close)}?)" if close else ""
