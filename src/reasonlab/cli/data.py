"""``reasonlab data CONFIG --out DIR`` writes the dataset of a config's task."""

from __future__ import annotations

from pathlib import Path

import typer

from reasonlab.cli.options import format_option, out_option, overrides_option
from reasonlab.config import ConfigError, load_config

FORMATS = ("text", "hf")


def data(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config whose task is written."),
    out: Path = out_option("Folder for the dataset files.", required=True),
    set_: list[str] = overrides_option(),
    format_: str = format_option(
        "text",
        "text: the task's own files (two-hop: the Grokked JSON layout; COPY, DP: a line per "
        "example). hf: a Hugging Face dataset, one split per probe, that datasets.load_dataset "
        "and load_from_disk read (token tasks).",
    ),
) -> None:
    """Write the dataset of a config's task (two-hop: the Grokked JSON layout)."""
    from reasonlab.core.files import require_empty_folder
    from reasonlab.tasks import write_dataset

    if format_ not in FORMATS:
        raise ConfigError(f"--format: {format_!r} is not one of {', '.join(FORMATS)}")
    cfg = load_config(config, set_)
    require_empty_folder(out)
    if format_ == "hf":
        from reasonlab.interop.hf_dataset import write_hf_dataset

        counts = write_hf_dataset(cfg.task, out)
    else:
        counts = write_dataset(cfg.task, out)
    typer.echo(f"{out}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
