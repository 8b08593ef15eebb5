"""``reasonlab run CONFIG`` trains one run; ``reasonlab run --resume RUN_DIR`` continues one."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from reasonlab.cli.options import out_option, overrides_option
from reasonlab.config import ConfigError, load_config
from reasonlab.core.files import interrupt_on_sigterm


def run(
    config: Path | None = typer.Argument(
        None, metavar="CONFIG", help="YAML config (omit with --resume)."
    ),
    set_: list[str] = overrides_option(),
    out: Path | None = out_option("Run folder (default runs/NAME-TIME)."),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue the run in this folder; with --set train.steps=N continue a finished "
        "run to N steps.",
    ),
    from_step: int | None = typer.Option(
        None,
        "--from-step",
        help="With --resume: continue from the checkpoint of this step when every newer one is "
        "damaged (they are kept aside as *.damaged).",
    ),
    allow_data_change: bool = typer.Option(
        False,
        "--allow-data-change",
        help="With --resume: continue although the task rebuilds to other data than the run "
        "recorded (noted in the run's summary).",
    ),
) -> None:
    """Train one run."""
    from reasonlab.runs.folder import RunDir, folder_name
    from reasonlab.training.loop import train
    from reasonlab.training.resume import extend_config

    interrupt_on_sigterm()
    if resume is not None:
        if config is not None or out is not None:
            raise ConfigError("--resume: takes only the run folder (no CONFIG or --out)")
        run_dir = RunDir(resume)
        cfg = run_dir.load_config()
        if set_:
            cfg = extend_config(cfg, set_)
        previous = run_dir.summary() or {}
        if previous.get("status") == "completed" and not set_ and from_step is None:
            typer.echo(
                f"{resume}: already completed at step {cfg.train.steps}; continue it with "
                f"reasonlab run --resume {resume} --set train.steps=N"
            )
            return
        summary = train(
            cfg,
            resume,
            resume=True,
            allow_data_change=allow_data_change,
            from_step=from_step,
            on_resume=lambda step: typer.echo(f"{resume}: resuming at step {step}", err=True),
        )
    else:
        if config is None:
            raise ConfigError("CONFIG: a config file is required (or --resume RUN_DIR)")
        if allow_data_change or from_step is not None:
            flag = "--allow-data-change" if allow_data_change else "--from-step"
            raise ConfigError(f"{flag}: only with --resume")
        cfg = load_config(config, set_)
        if out is None:
            stem = folder_name(cfg.name or config.stem)
            out = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = train(cfg, out)
        resume = out
    final = ", ".join(f"{k} {v:.3f}" for k, v in summary["final"].items() if "." not in k)
    typer.echo(f"{resume}: {summary['status']} in {summary['wall_s']:.1f}s; {final}")
