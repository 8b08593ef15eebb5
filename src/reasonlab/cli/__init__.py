"""The ``reasonlab`` command line: each command is a thin call into the library.

``app`` (the Typer app, in ``app.py``) is assembled from a module per command group: run, data,
study, sweep, runs, export, config, and the sub-apps analyze and bench; ``options.py`` declares
the options they share. ``main`` runs it and turns errors into exit codes: 0 success, 2 bad
input (one line naming the field or file), 1 internal error, 130 interrupted. ``docs.py`` writes
docs/cli.md and docs/config.md from the commands and config classes.
"""

from __future__ import annotations

from reasonlab.cli.app import app, main

__all__ = ["app", "main"]
