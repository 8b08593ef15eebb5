"""``metrics.jsonl``: one JSON record per evaluation, appended line by line.

Records are strict JSON: a value that is not a finite number (a NaN loss, an infinite error) is
written as null and named under ``nonfinite`` with what it was, so every JSON reader can read the
file. A process killed while appending leaves at most a torn last line; reading for a resume drops
only that line. Any other unreadable record stops the resume with the line's number, and nothing is
changed: a record is never deleted because it could not be read.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError
from reasonlab.core.files import atomic_path

NONFINITE_KEY = "nonfinite"  # {key: "nan" | "inf" | "-inf"} for each value written as null


def finite_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every non-finite number replaced by null and named under ``nonfinite``."""
    clean: dict[str, Any] = {}
    bad: dict[str, str] = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            clean[key], bad[key] = None, str(value)
        else:
            clean[key] = value
    if bad:
        clean[NONFINITE_KEY] = {**clean.get(NONFINITE_KEY, {}), **bad}
    return clean


def encode_record(record: dict[str, Any]) -> str:
    return json.dumps(finite_record(record), allow_nan=False) + "\n"


def append_record(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(encode_record(record))
        handle.flush()
        os.fsync(handle.fileno())


def _valid_step(record: Any) -> bool:
    step = record.get("step") if isinstance(record, dict) else None
    return isinstance(step, int) and not isinstance(step, bool) and step >= 0


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every readable record, for display and analysis: unreadable lines are skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if _valid_step(record):
            records.append(record)
    return records


def read_for_resume(path: Path) -> list[dict[str, Any]]:
    """Every record, for a resume: a torn last line is dropped; any other line that is not a
    record with a step (or whose step goes backwards) is a ConfigError naming the line, and the
    file is left as it is."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().split("\n")
    except UnicodeDecodeError:
        lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    if lines and lines[-1] == "":
        lines.pop()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        readable = _valid_step(record)
        if readable and records and record["step"] <= records[-1]["step"]:
            readable = False
        if readable:
            records.append(record)
        elif number < len(lines):  # the last line may be torn by a kill; any other is damage
            raise ConfigError(
                f"{path}: line {number} is not a metrics record (damaged); nothing was changed: "
                "repair or remove that line, then resume again"
            )
    return records


def rewrite_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Replaces the file by ``records``, atomically (used by a resume after its checks)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(encode_record(r) for r in records))
