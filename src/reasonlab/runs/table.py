"""One table over many runs: every run folder under a directory with its config values and its
summary's metrics, read from the folders' own JSON files by DuckDB at each call (no second copy
of results that could drift from the runs).

The table's columns are ``run`` (the folder, relative to the directory), ``path``, the summary's
(``RunSummary``, runs/summary.py) ``status``, ``step``, ``steps``, ``wall_s``, ``num_parameters``
and ``error``, the config's sections (``task``, ``model``, ``train``, ``eval``, ``log``) and the
summary's ``final``, ``best`` and ``steps_to_threshold``. Sections are DuckDB structs, so a
filter reads like the config: ``--where "model.n_layers = 4 AND final.test_inferred_ood >= 0.9"``;
a metric whose name holds a dot may be written as it is (``final.test.k10 < 0.05`` is rewritten
to ``final."test.k10" < 0.05`` before DuckDB reads it). Rows come back flattened to dotted
column names.

A trial of a study or a sweep that failed before its folder held a config.json (a bad config,
an error while its data was built) has no run folder to read; the study's or sweep's own
summary.json records it, and the table lists it from there: status ``failed``, its ``error``,
and no config or metric.

The default columns (``select_columns``) are the ones that tell the rows listed apart: the run,
its status and step (and the error where a row has one), then the config keys and final metrics
whose values differ among the rows; a text table over several task kinds is printed one kind at
a time (``task_groups``), each with its own columns.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError

SUMMARY_COLUMNS = ("status", "step", "steps", "wall_s", "num_parameters", "error")
SUMMARY_SECTIONS = ("final", "best", "steps_to_threshold")
CONFIG_SECTIONS = ("task", "model", "train", "eval", "log")
FORMATS = ("table", "csv", "json", "parquet")
ERROR_WIDTH = 60  # characters of a failed run's error shown in a text table
# a summary section followed by a metric name that holds a dot: final.test.k10 (not quoted)
DOTTED_METRIC = re.compile(
    r"\b(" + "|".join(SUMMARY_SECTIONS) + r")\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)"
)
# the parts of a filter that are literals or quoted identifiers: left as they are
QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")")


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise ConfigError("duckdb is not installed (pip install 'reasonlab[runs]')") from None
    return duckdb


def find_runs(root: Path) -> list[Path]:
    """Every run folder (one holding config.json) at or under ``root``, sorted; checkpoints and
    analysis folders are not searched."""
    if not root.is_dir():
        raise ConfigError(f"DIR: {root} is not a folder")
    return sorted(path.parent for path in root.rglob("config.json") if path.is_file())


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _relation(connection: Any, root: Path, runs: list[Path]) -> str:
    """Creates the views over the folders' config.json and summary.json and the table of run
    names; returns the select of the runs table (before any filter)."""
    read = "read_json_auto({files}, filename = true, union_by_name = true)"
    configs = read.format(files=_sql_list([r / "config.json" for r in runs]))
    connection.execute(f"CREATE TEMP VIEW configs AS SELECT * FROM {configs}")
    config_columns = {row[0] for row in connection.execute("DESCRIBE configs").fetchall()}
    connection.execute("CREATE TEMP TABLE names (path VARCHAR, run VARCHAR)")
    base = root.resolve()
    connection.executemany(
        "INSERT INTO names VALUES (?, ?)",
        [[str(r), r.relative_to(base).as_posix() if r != base else "."] for r in runs],
    )
    selects = [f"c.{s}" if s in config_columns else f"NULL AS {s}" for s in CONFIG_SECTIONS]
    summaries = [r / "summary.json" for r in runs if _readable(r / "summary.json")]
    summary_columns: set[str] = set()
    join = ""
    if summaries:
        files = read.format(files=_sql_list(summaries))
        connection.execute(f"CREATE TEMP VIEW summaries AS SELECT * FROM {files}")
        summary_columns = {row[0] for row in connection.execute("DESCRIBE summaries").fetchall()}
        join = "LEFT JOIN summaries s ON parse_dirpath(s.filename) = n.path"
    wanted = (*SUMMARY_COLUMNS, *SUMMARY_SECTIONS)
    selects += [f"s.{s}" if s in summary_columns else f"NULL AS {s}" for s in wanted]
    return (
        "SELECT n.run, n.path, " + ", ".join(selects) + " FROM configs c "
        "JOIN names n ON parse_dirpath(c.filename) = n.path " + join
    )


def quote_dotted_metrics(where: str) -> str:
    """``where`` with every metric name that holds a dot quoted as DuckDB needs it:
    ``final.test.k10`` -> ``final."test.k10"`` (string literals and quoted names untouched)."""
    parts = QUOTED.split(where)
    for i in range(0, len(parts), 2):  # even parts lie outside quotes
        parts[i] = DOTTED_METRIC.sub(r'\1."\2"', parts[i])
    return "".join(parts)


def failed_trials(root: Path, runs: list[Path]) -> list[dict[str, str]]:
    """Trials that a study's or a sweep's summary.json under ``root`` records as failed and
    that have no run folder with a config.json among ``runs``: {path, run, status, error}."""
    known = {run.resolve() for run in runs}
    base = root.resolve()
    found = []
    for path in sorted(root.rglob("summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if not isinstance(summary, dict):
            continue
        trials = summary.get("trials") if "sweep" in summary else summary.get("runs")
        if not isinstance(trials, dict) or not ("sweep" in summary or "study" in summary):
            continue
        for name, trial in trials.items():
            folder = (path.parent / "runs" / str(name)).resolve()
            if not isinstance(trial, dict) or trial.get("status") != "failed" or folder in known:
                continue
            run = folder.relative_to(base).as_posix() if folder.is_relative_to(base) else str(name)
            error = trial.get("error")
            found.append(
                {"path": str(folder), "run": run, "status": "failed", "error": str(error or "")}
            )
    return found


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def _readable(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def query_runs(
    root: str | Path, where: str | None = None, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """The rows of every run under ``root`` (optionally filtered by a DuckDB SQL expression),
    flattened to dotted column names, in the runs' folder order, with the failed trials of the
    studies and sweeps under ``root`` that left no run folder (module docstring). A run whose
    config.json is not a JSON object is left out, one whose summary.json is not is listed
    without its summary; ``warn`` is told of each."""
    duckdb = _duckdb()
    root = Path(root)
    runs = []
    for run in find_runs(root):
        if not _readable(run / "config.json"):
            if warn:
                warn(f"{run / 'config.json'}: not a JSON object; run left out")
            continue
        summary = run / "summary.json"
        if summary.exists() and not _readable(summary) and warn:
            warn(f"{summary}: not a JSON object; run listed without its summary")
        runs.append(run.resolve())
    failed = failed_trials(root, runs)
    if not runs and not failed:
        return []
    connection = duckdb.connect()
    try:
        selects = [_relation(connection, root, runs)] if runs else []
        if failed:
            connection.execute(
                "CREATE TEMP TABLE failed (path VARCHAR, run VARCHAR, status VARCHAR, "
                "error VARCHAR)"
            )
            columns = ("path", "run", "status", "error")
            connection.executemany(
                "INSERT INTO failed VALUES (?, ?, ?, ?)", [[f[c] for c in columns] for f in failed]
            )
            selects.append("SELECT run, path, status, error FROM failed")
        select = " UNION ALL BY NAME ".join(f"({s})" for s in selects)
        condition = f"WHERE {quote_dotted_metrics(where)}" if where else ""
        sql = f"SELECT * FROM ({select}) {condition} ORDER BY run"
        try:
            cursor = connection.execute(sql)
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            hint = ' (a key holding a dot is quoted: final."test.k10")' if "." in str(where) else ""
            raise ConfigError(f"--where: {first}{hint}") from None
        names = [d[0] for d in cursor.description]
        rows = []
        for values in cursor.fetchall():
            flat: dict[str, Any] = {}
            for name, value in zip(names, values, strict=True):
                _flatten(value, name, flat)
            rows.append(flat)
        return rows
    finally:
        connection.close()


def varying_keys(rows: list[dict[str, Any]], prefixes: tuple[str, ...]) -> list[str]:
    """The keys (under ``prefixes``) whose value is not the same in every row."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update({k: None for k in row if k.startswith(prefixes)})
    return [k for k in keys if len({json.dumps(r.get(k), default=str) for r in rows}) > 1]


def task_groups(rows: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """The rows by ``task.kind`` in order of first appearance (None: failed trials without a
    config)."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get("task.kind"), []).append(row)
    return groups


def _default_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The run, status and step (the error where a row has one), then the config keys and the
    final metrics that differ among the rows that have a config; for one such row, its final
    metrics."""
    shown = ["run", "status", "step"] + (["error"] if any(r.get("error") for r in rows) else [])
    configured = [r for r in rows if r.get("task.kind") is not None]
    config_prefixes = tuple(f"{s}." for s in CONFIG_SECTIONS)
    if len(configured) == 1:
        finals = [k for k, v in configured[0].items() if k.startswith("final.") and v is not None]
        return shown + finals
    return shown + varying_keys(configured, config_prefixes) + varying_keys(configured, ("final.",))


def select_columns(rows: list[dict[str, Any]], columns: list[str] | None) -> list[str]:
    """The columns shown: ``columns`` (names or shell patterns such as ``final.*``), or by
    default those that tell the rows apart (``_default_columns``) for each task kind, in one
    list."""
    every: dict[str, None] = {}
    for row in rows:
        every.update(dict.fromkeys(row))
    if columns:
        chosen: dict[str, None] = {}
        for pattern in columns:
            matched = [k for k in every if fnmatch.fnmatchcase(k, pattern)]
            if not matched:
                raise ConfigError(f"--columns: {pattern!r} matches no column")
            chosen.update(dict.fromkeys(matched))
        return list(chosen)
    shown: dict[str, None] = {}
    for group in task_groups(rows).values():
        shown.update(dict.fromkeys(_default_columns(group)))
    return list(shown)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _table_cell(value: Any, column: str) -> str:
    """A cell of a text table: an error cut to ``ERROR_WIDTH`` characters."""
    text = _cell(value)
    if column == "error" and len(text) > ERROR_WIDTH:
        return text[: ERROR_WIDTH - 3] + "..."
    return text


def format_table(rows: list[dict[str, Any]], columns: list[str] | None) -> str:
    """The text table of ``reasonlab runs``: with ``columns`` one table; by default one table
    per task kind, each headed by its kind and with the columns that tell its rows apart."""
    groups = task_groups(rows)
    if columns or len(groups) == 1:
        return format_rows(rows, select_columns(rows, columns), "table")
    blocks = []
    for kind, group in groups.items():
        title = f"task.kind {kind}" if kind is not None else "failed before training"
        heading = f"{title}: {len(group)} run{'s' if len(group) != 1 else ''}"
        blocks.append(heading + "\n" + format_rows(group, select_columns(group, None), "table"))
    return "\n\n".join(blocks)


def format_rows(rows: list[dict[str, Any]], columns: list[str], fmt: str) -> str:
    """The rows as an aligned text table, CSV or JSON (a list of objects)."""
    if fmt == "json":
        return json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(row.get(c)) for c in columns] for row in rows])
        return buffer.getvalue().rstrip("\n")
    cells = [columns, *[[_table_cell(row.get(c), c) for c in columns] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)) for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def runs_frame(root: str | Path, where: str | None = None, columns: list[str] | None = None) -> Any:
    """The runs under ``root`` as a pandas DataFrame (every column unless ``columns`` is given;
    the same rows as ``reasonlab runs``)."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("pandas is not installed (pip install 'reasonlab[runs]')") from None
    rows = query_runs(root, where)
    names = (
        select_columns(rows, columns)
        if columns
        else list(dict.fromkeys(k for row in rows for k in row))
    )
    return pd.DataFrame([{c: row.get(c) for c in names} for row in rows], columns=names)


def write_parquet(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    """The rows as a Parquet file (through a DataFrame; nested values as JSON text)."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("pandas is not installed (pip install 'reasonlab[runs]')") from None
    frame = pd.DataFrame(
        [
            {c: json.dumps(v) if isinstance(v := row.get(c), (list, dict)) else v for c in columns}
            for row in rows
        ],
        columns=columns,
    )
    duckdb = _duckdb()
    connection = duckdb.connect()
    try:
        connection.register("frame", frame)
        target = str(path).replace("'", "''")
        connection.execute(f"COPY frame TO '{target}' (FORMAT parquet)")
    finally:
        connection.close()
