"""Importing reasonlab's plotting picks the file backend (Agg) unless MPLBACKEND chose one: a
notebook kernel sets the inline backend there, and reasonlab must not take it away."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SHOW_BACKEND = "import reasonlab.reporting.plots, matplotlib; print(matplotlib.get_backend())"


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [(None, "agg"), ("module://matplotlib_inline.backend_inline", "inline"), ("svg", "svg")],
)
def test_the_backend_a_kernel_or_user_chose_is_kept(chosen, expected):
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    if chosen is not None:
        env["MPLBACKEND"] = chosen
    shown = subprocess.run(
        [sys.executable, "-c", SHOW_BACKEND], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert expected in shown.lower()
