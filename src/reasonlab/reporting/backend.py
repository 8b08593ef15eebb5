"""matplotlib's backend for reasonlab's figures.

Reports and analysis figures are drawn to PNG files and bytes, so reasonlab selects Agg (no
screen needed, safe in worker processes). It leaves the backend alone where one was chosen by
``MPLBACKEND``: Jupyter's kernel sets the inline one there, and importing reasonlab in a notebook
must not take its inline figures away.
"""

from __future__ import annotations

import os

import matplotlib


def use_file_backend() -> None:
    """Agg, unless ``MPLBACKEND`` names a backend (a notebook kernel, or the user's choice)."""
    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
