"""The ``reasonlab`` command line: each command is a thin call into the library.

Exit codes: 0 success, 2 bad input (one line naming the field or file, no traceback),
1 internal error, 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import typer
from typer.main import get_command

from reasonlab.config import ConfigError, load_config

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="reasonlab: controlled experiments on how small sequence models learn to reason.",
)

analyze_app = typer.Typer(help="Open a trained run up: logit lens, causal tracing.")
app.add_typer(analyze_app, name="analyze")

SET_HELP = "Override a config key, e.g. --set train.lr=3e-4 (repeatable)."


def _interrupt_on_sigterm() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
def run(
    config: Path | None = typer.Argument(None, help="YAML config (omit with --resume)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/NAME-TIME)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this folder."),
) -> None:
    """Train one run."""
    from reasonlab.runs import RunDir
    from reasonlab.train import train

    _interrupt_on_sigterm()
    if resume is not None:
        if config is not None or set_ or out is not None:
            raise ConfigError("--resume: takes only the run folder (no CONFIG, --set or --out)")
        run_dir = RunDir(resume)
        cfg = run_dir.load_config()
        previous = run_dir.summary() or {}
        if previous.get("status") == "completed":
            typer.echo(f"{resume}: already completed")
            return
        summary = train(cfg, resume, resume=True)
    else:
        if config is None:
            raise ConfigError("CONFIG: a config file is required (or --resume RUN_DIR)")
        cfg = load_config(config, set_)
        if out is None:
            out = Path("runs") / f"{cfg.name or config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = train(cfg, out)
        resume = out
    final = ", ".join(f"{k} {v:.3f}" for k, v in summary["final"].items() if "." not in k)
    typer.echo(f"{resume}: {summary['status']} in {summary['wall_s']:.1f}s; {final}")


@app.command()
def data(
    config: Path = typer.Argument(..., help="YAML config whose task is written."),
    out: Path = typer.Option(..., "--out", help="Folder for the dataset files."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Write the dataset of a config's task (two-hop: the Grokked JSON layout)."""
    from reasonlab.tasks import write_dataset

    cfg = load_config(config, set_)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not empty; choose another folder")
    counts = write_dataset(cfg.task, out)
    typer.echo(f"{out}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


@app.command()
def study(
    name: str | None = typer.Argument(None, help="Study name (see --list)."),
    preset: str = typer.Option("cpu", "--preset", help="cpu (minutes on a laptop) or paper."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per configuration."),
    out: Path | None = typer.Option(None, "--out", help="Study folder (default runs/NAME-PRESET)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key in every run. " + SET_HELP),
    list_: bool = typer.Option(False, "--list", help="List the ready studies."),
    reuse: Path | None = typer.Option(
        None, "--reuse", help="Copy completed runs with identical configs from this study folder."
    ),
) -> None:
    """Run a ready study (a set of runs) and write summary.json and report.html."""
    from reasonlab.studies import STUDIES, run_study

    _interrupt_on_sigterm()
    if list_:
        for study_name, spec in STUDIES.items():
            typer.echo(f"{study_name}: {spec.description} (presets: {', '.join(spec.presets)})")
        return
    if name is None:
        raise ConfigError("NAME: give a study name (reasonlab study --list)")
    out = out or Path("runs") / f"{name}-{preset}"
    if reuse is not None and not reuse.is_dir():
        raise ConfigError(f"--reuse: {reuse} is not a folder")
    result = run_study(name, preset=preset, seeds=seeds, out=out, overrides=set_, reuse=reuse)
    typer.echo(f"{out}: {len(result['runs'])} runs; report {out / 'report.html'}")


@analyze_app.command("logit-lens")
def analyze_logit_lens(
    run_dir: Path = typer.Argument(..., help="A two-hop run folder."),
    probe: str = typer.Option("test_inferred_ood", "--probe", help="Which probe's queries."),
    target: str = typer.Option("bridge", "--target", help="bridge or tail."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="STEP, last or all."),
    queries: int = typer.Option(300, "--queries", min=1, help="Number of queries."),
) -> None:
    """Rank / MRR of the bridge or tail at every layer x position (JSON + PNG in RUN_DIR)."""
    from reasonlab.analysis.runs import run_logit_lens

    if target not in ("bridge", "tail"):
        raise ConfigError(f"--target: {target!r} is not bridge or tail")
    result = run_logit_lens(run_dir, probe, target, checkpoint, queries)
    for entry in result["checkpoints"]:
        layer = entry["first_top1_layer"]
        where = "never" if layer is None else result["layers"][layer]
        typer.echo(
            f"step {entry['step']}: {target} top-1 at position "
            f"{result['positions'][result['read_position']]} from layer {where}; "
            f"top-1 share by layer {[round(v, 2) for v in entry['top1_at_read']]}"
        )
    typer.echo(f"wrote {Path(run_dir) / 'analysis'}")


@analyze_app.command("trace")
def analyze_trace(
    run_dir: Path = typer.Argument(..., help="A two-hop run folder."),
    probe: str = typer.Option("test_inferred_ood", "--probe", help="Which probe's queries."),
    change: str = typer.Option("bridge", "--change", help="head, r1, r2 or bridge."),
    target: str = typer.Option("tail", "--target", help="bridge or tail."),
    hook: str = typer.Option("resid", "--hook", help="resid, attn_out or mlp_out."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="STEP, last or all."),
    queries: int = typer.Option(300, "--queries", min=1, help="Number of queries."),
) -> None:
    """Causal tracing: patch one layer x position from a counterfactual (JSON + PNG)."""
    from reasonlab.analysis.runs import run_trace
    from reasonlab.analysis.twohop_queries import CHANGES

    if change not in CHANGES:
        raise ConfigError(f"--change: {change!r} is not one of {', '.join(CHANGES)}")
    if target not in ("bridge", "tail"):
        raise ConfigError(f"--target: {target!r} is not bridge or tail")
    result = run_trace(run_dir, probe, change, target, hook, checkpoint, queries)
    last = result["checkpoints"][-1]
    typer.echo(
        f"step {last['step']}, {result['queries']} queries: clean {target} top-1 "
        f"{last['clean_top1']:.2f}, counterfactual {last['corrupt_top1']:.2f}"
    )
    typer.echo(
        "share still answering the clean target (rows: layers, columns: "
        + " ".join(result["positions"])
        + ")"
    )
    for label, row in zip(result["layers"], last["top1"], strict=True):
        cells = " ".join("  -  " if v is None else f"{v:5.2f}" for v in row)
        typer.echo(f"  {label:>5} {cells}")
    typer.echo(f"wrote {Path(run_dir) / 'analysis'}")


@app.command()
def bench(
    name: str = typer.Argument("step", help="step: one training step vs Hugging Face GPT-2."),
    n_layers: int = typer.Option(4, "--layers", min=1),
    d_model: int = typer.Option(128, "--width", min=1),
    n_heads: int = typer.Option(4, "--heads", min=1),
    batch_size: int = typer.Option(512, "--batch", min=1),
    seq_len: int = typer.Option(5, "--seq-len", min=2),
    repeats: int = typer.Option(20, "--repeats", min=1),
) -> None:
    """Speed benchmarks against real peers, printed as JSON."""
    import json

    from reasonlab.bench import step_time

    if name != "step":
        raise ConfigError(f"NAME: unknown benchmark {name!r} (known: step)")
    if d_model % n_heads:
        raise ConfigError(f"--width: {d_model} is not divisible by --heads {n_heads}")
    result = step_time(
        n_layers, d_model, n_heads, batch_size=batch_size, seq_len=seq_len, repeats=repeats
    )
    typer.echo(json.dumps(result, indent=2))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    out: Path = typer.Argument(..., help="New (or empty) folder for the exported model."),
    format_: str = typer.Option("hf", "--format", help="hf: a Hugging Face GPT-2 checkpoint."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="STEP or last."),
) -> None:
    """Export a run's model: GPT2LMHeadModel.from_pretrained(OUT) gives the same logits."""
    from reasonlab.export import export_run

    record = export_run(run_dir, out, fmt=format_, checkpoint=checkpoint)
    typer.echo(f"{out}: step {record['step']} of {run_dir} as {format_}")


def _is_usage_error(error: Exception) -> bool:
    """Click's (or Typer's vendored click's) usage errors: bad option, missing argument, ..."""
    return callable(getattr(error, "format_message", None)) and getattr(error, "exit_code", 0) == 2


def main(argv: list[str] | None = None) -> None:
    command = get_command(app)
    try:
        code = command.main(args=argv, standalone_mode=False, prog_name="reasonlab")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if type(error).__name__ == "Abort":
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        if not _is_usage_error(error):
            raise
        message = " ".join(error.format_message().split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
