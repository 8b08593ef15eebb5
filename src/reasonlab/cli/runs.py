"""``reasonlab runs DIR`` lists the runs under a folder with their config values and metrics."""

from __future__ import annotations

from pathlib import Path

import typer

from reasonlab.cli.options import format_option
from reasonlab.config import ConfigError


def runs(
    root: Path = typer.Argument(..., metavar="DIR", help="A folder of runs (a study's, or any)."),
    where: str | None = typer.Option(
        None,
        "--where",
        help='DuckDB SQL filter over the runs, e.g. "model.n_layers = 4 AND '
        'final.test_inferred_ood >= 0.9" (sections are structs; a metric holding a dot is '
        "written as it is: final.test.k10).",
    ),
    columns: str | None = typer.Option(
        None,
        "--columns",
        help="Comma-separated columns or patterns (final.*, model.*); default: run, status, "
        "step, and the config keys and final metrics that differ among the runs listed (one "
        "table per task kind).",
    ),
    fmt: str = format_option("table", "table, csv, json or parquet."),
    output: Path | None = typer.Option(
        None, "--output", help="Write to this file (needed for parquet) instead of stdout."
    ),
) -> None:
    """List the runs under DIR with their config values and summary metrics, read from the run
    folders themselves (DuckDB over their JSON; in Python: reasonlab.runs.table.runs_frame)."""
    from reasonlab.runs.table import (
        FORMATS,
        format_rows,
        format_table,
        query_runs,
        select_columns,
        write_parquet,
    )

    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise ConfigError("--output: parquet is written to a file; give --output FILE")
    rows = query_runs(root, where, warn=lambda line: typer.echo(f"warning: {line}", err=True))
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    names = select_columns(rows, wanted) if rows else []
    if fmt == "parquet":
        assert output is not None
        write_parquet(rows, names, output)
        typer.echo(f"wrote {output}: {len(rows)} runs")
        return
    if not rows:
        text = "[]" if fmt == "json" else ""
    elif fmt == "table":
        text = format_table(rows, wanted)
    else:
        text = format_rows(rows, names, fmt)
    if output is not None:
        output.write_text(text + "\n")
        typer.echo(f"wrote {output}: {len(rows)} runs")
    elif text:
        typer.echo(text)
    if not rows and fmt == "table":
        typer.echo(f"{root}: no runs" + (" match --where" if where else ""), err=True)
