"""The error every layer raises for bad user input (a config key, an argument, a file).

The command line turns it into exit code 2 and its one-line message; anything else is exit 1.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input: a config key, an override, a file. Its message is one line."""


class RunFailed(RuntimeError):
    """A run stopped by a cause inside it (a NaN loss): exit 1 with this one line. ``step`` is
    where it stopped."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step
