"""``reasonlab data CONFIG --out DIR`` writes the dataset of a config's task."""

from __future__ import annotations

from pathlib import Path

import typer

from reasonlab.cli.options import out_option, overrides_option
from reasonlab.config import load_config


def data(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config whose task is written."),
    out: Path = out_option("Folder for the dataset files.", required=True),
    set_: list[str] = overrides_option(),
) -> None:
    """Write the dataset of a config's task (two-hop: the Grokked JSON layout)."""
    from reasonlab.core.files import require_empty_folder
    from reasonlab.tasks import write_dataset

    cfg = load_config(config, set_)
    require_empty_folder(out)
    counts = write_dataset(cfg.task, out)
    typer.echo(f"{out}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
