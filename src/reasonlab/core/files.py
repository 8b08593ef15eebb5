"""Files written whole or not at all, and JSON read with one-line errors naming the file."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from reasonlab.core.errors import ConfigError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; renames it over ``path`` on success. A failed
    write (a full disk, a read-only file system) leaves ``path`` as it was, removes the temporary
    file and raises the OSError with ``path`` as its file name (not the temporary one)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    finally:
        with suppress(OSError):  # nothing was created there (a read-only file system)
            tmp.unlink(missing_ok=True)


def make_dir(path: Path, what: str = "--out") -> None:
    """mkdir -p; a path that cannot be a folder (a file in the way, no permission) is bad input."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a folder must be
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        where = "" if blocker == path else f"{blocker} "
        raise ConfigError(f"{what} {path}: {where}is a file, expected a folder") from None
    except OSError as error:
        raise ConfigError(f"{what} {path}: cannot create the folder ({error.strerror})") from None


def require_empty_folder(path: Path, what: str = "--out") -> None:
    """An output folder must be new or empty: a file, or a folder holding anything, is refused
    (before anything is written)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: is a file, expected a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"{what} {path}: exists and is not empty; choose another folder")


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path, missing: str = "missing") -> Any:
    """The parsed file; a missing, unreadable or malformed file is a ConfigError naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path}: not valid JSON") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None


def interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler's stop, ``timeout``, ``kill``) ends a run as Ctrl-C does: saved as
    interrupted and resumable, never left half-written."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
