"""``reasonlab study NAME`` runs a ready study; ``reasonlab study --list`` lists them."""

from __future__ import annotations

from pathlib import Path

import typer

from reasonlab.cli.options import (
    jobs_option,
    out_option,
    overrides_option,
    pack_option,
    seeds_option,
)
from reasonlab.config import ConfigError
from reasonlab.core.files import interrupt_on_sigterm


def study(
    name: str | None = typer.Argument(None, metavar="NAME", help="Study name (see --list)."),
    preset: str = typer.Option(
        "cpu",
        "--preset",
        help="cpu (minutes on a laptop), paper (a GPU), or another preset the study lists.",
    ),
    seeds: int | None = seeds_option("Seeds per configuration (default: the study's, most 1)."),
    out: Path | None = out_option("Study folder (default runs/NAME-PRESET)."),
    set_: list[str] = overrides_option(
        "Override a config key in every run, e.g. --set train.lr=3e-4 (repeatable)."
    ),
    list_: bool = typer.Option(False, "--list", help="List the ready studies."),
    reuse: Path | None = typer.Option(
        None, "--reuse", help="Copy completed runs with identical configs from this study folder."
    ),
    jobs: int = jobs_option("Runs trained at once, each in its own process (e.g. on a GPU)."),
    pack: str = pack_option(),
) -> None:
    """Run a ready study (a set of runs) and write summary.json and report.html."""
    from reasonlab.experiments.trials import parse_pack
    from reasonlab.studies import STUDIES, run_study

    interrupt_on_sigterm()
    if list_:
        for study_name, spec in STUDIES.items():
            typer.echo(f"{study_name}: {spec.description} (presets: {', '.join(spec.presets)})")
        return
    if name is None:
        raise ConfigError("NAME: give a study name (reasonlab study --list)")
    parse_pack(pack)  # a bad value is refused before anything starts
    out = out or Path("runs") / f"{name}-{preset}"
    if reuse is not None and not reuse.is_dir():
        raise ConfigError(f"--reuse: {reuse} is not a folder")
    result = run_study(
        name, preset=preset, seeds=seeds, out=out, overrides=set_, reuse=reuse, jobs=jobs, pack=pack
    )
    typer.echo(f"{out}: {len(result['runs'])} runs; report {out / 'report.html'}")
