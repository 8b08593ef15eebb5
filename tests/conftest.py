"""Fixtures and hooks shared by every test folder (the helpers the tests import are in
helpers.py)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from helpers import TINY_YAML


@pytest.fixture(autouse=True)
def restore_sigterm() -> Iterator[None]:
    """``run`` and ``study`` install a SIGTERM handler; every test leaves the process's handler
    as it found it."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models: on a busy shared CPU a second thread makes
    each small op wait for the other, and such tests run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    """Writes text to a file under the test's folder and returns its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def tiny_yaml(write_yaml: Callable[..., Path]) -> Path:
    """The tiny run config as a YAML file."""
    return write_yaml(TINY_YAML, name="tiny.yaml")
