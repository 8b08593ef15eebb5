"""The error every layer raises for bad user input (a config key, an argument, a file).

The command line turns it into exit code 2 and its one-line message; anything else is exit 1.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input: a config key, an override, a file. Its message is one line."""
