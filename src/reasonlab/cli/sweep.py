"""``reasonlab sweep SPEC.yaml --out DIR`` expands a sweep spec into runs and trains them."""

from __future__ import annotations

from pathlib import Path

import typer

from reasonlab.cli.options import jobs_option, out_option, pack_option
from reasonlab.config.limits import MAX_TRIALS
from reasonlab.core.files import interrupt_on_sigterm


def sweep(
    spec: Path = typer.Argument(
        ..., metavar="SPEC.yaml", help="A sweep spec (reasonlab.experiments.sweep)."
    ),
    out: Path = out_option("The sweep's folder (runs under OUT/runs).", required=True),
    executor: str = typer.Option("local", "--executor", help="local or ray."),
    jobs: int = jobs_option("local: trials trained at once, each in its own process."),
    address: str | None = typer.Option(
        None, "--address", help="ray: a running cluster's address (default: start Ray here)."
    ),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="ray: CPUs per trial."),
    gpus_per_trial: float = typer.Option(
        0.0, "--gpus-per-trial", help="ray: GPUs per trial (a fraction shares one)."
    ),
    max_trials: int = typer.Option(
        MAX_TRIALS,
        "--max-trials",
        min=1,
        help=f"Refuse a spec of more trials than this (counted before any is built; default "
        f"{MAX_TRIALS:,}).",
    ),
    pack: str = pack_option(),
) -> None:
    """Expand a sweep spec into runs and train them (again: finished trials are skipped, stopped
    ones resumed; a failing trial is recorded and the rest go on). Exit 1 if any trial failed."""
    from reasonlab.experiments.sweep import run_sweep

    interrupt_on_sigterm()
    result = run_sweep(
        spec, out, executor, jobs, address, cpus_per_trial, gpus_per_trial, max_trials, pack
    )
    trials = result["trials"]
    failed = {n: t for n, t in trials.items() if t.get("status") != "completed"}
    typer.echo(f"{out}: {len(trials) - len(failed)} of {len(trials)} trials completed")
    for name, trial in failed.items():
        typer.echo(f"  {name}: {trial.get('status')}: {trial.get('error', '')}", err=True)
    if failed:
        raise typer.Exit(1)
