"""``reasonlab config``: every config key with its default and meaning, or a config resolved."""

from __future__ import annotations

from pathlib import Path

import typer

from reasonlab.cli.options import format_option, overrides_option
from reasonlab.config import ConfigError, load_config


def config_keys(
    config: Path | None = typer.Argument(
        None, metavar="CONFIG", help="A YAML config to print resolved (every key filled in)."
    ),
    set_: list[str] = overrides_option(),
    defaults: bool = typer.Option(
        False, "--defaults", help="Print every config key with its default and meaning."
    ),
    format_: str = format_option(
        "yaml",
        "With --defaults: yaml (a config file with a comment on every key) or markdown "
        "(docs/config.md).",
    ),
) -> None:
    """Print every config key with its default and meaning, or a config file resolved."""
    import yaml

    from reasonlab.config.reference import defaults_markdown, defaults_yaml

    formats = {"yaml": defaults_yaml, "markdown": defaults_markdown}
    if format_ not in formats:
        raise ConfigError(f"--format: {format_!r} is not one of {', '.join(formats)}")
    if defaults:
        if config is not None or set_:
            raise ConfigError("--defaults: takes no CONFIG or --set")
        typer.echo(formats[format_](), nl=False)
        return
    if config is None and not set_:
        raise ConfigError("CONFIG: give a config file (or --set) to resolve, or --defaults")
    if format_ != "yaml":
        raise ConfigError("--format: markdown is only for --defaults")
    resolved = load_config(config, set_).model_dump(mode="json")
    typer.echo(yaml.safe_dump(resolved, sort_keys=False), nl=False)
