"""The ``reasonlab`` command line: each command is a thin call into the library.

Exit codes: 0 success, 2 bad input (one line naming the field or file, no traceback),
1 internal error, 130 interrupted (with one line saying what was saved and how to resume).
``reasonlab`` without a command (or ``reasonlab analyze`` without one) prints the help, as
``--help`` does, and exits 0.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import typer
from typer.main import get_command

from reasonlab.config import ConfigError, load_config
from reasonlab.core.files import interrupt_on_sigterm

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="reasonlab: controlled experiments on how small sequence models learn to reason.",
    epilog="Exit codes: 0 success, 2 bad input, 1 internal error, 130 interrupted. "
    "Every config key with its default: reasonlab config --defaults.",
)

analyze_app = typer.Typer(
    help="Open a trained run up: logit lens, causal tracing, the decay probe."
)
app.add_typer(analyze_app, name="analyze")

SET_HELP = "Override a config key, e.g. --set train.lr=3e-4 (repeatable)."
PROBE_HELP = "Which probe's queries: a two-hop or k-hop probe (e.g. test_inferred_3hop_ood)."
CHECKPOINT_HELP = "STEP, last or all (all also plots over training)."
ALLOW_DATA_CHANGE_HELP = (
    "Analyse although the task rebuilds to other data than the run recorded "
    "(noted in the output JSON)."
)


def _print_version(value: bool) -> None:
    if value:
        from reasonlab import __version__

        typer.echo(f"reasonlab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    pass


@app.command()
def run(
    config: Path | None = typer.Argument(
        None, metavar="CONFIG", help="YAML config (omit with --resume)."
    ),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/NAME-TIME)."),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue the run in this folder; with --set train.steps=N continue a finished "
        "run to N steps.",
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
    from reasonlab.training.loop import extend_config, train

    interrupt_on_sigterm()
    if resume is not None:
        if config is not None or out is not None:
            raise ConfigError("--resume: takes only the run folder (no CONFIG or --out)")
        run_dir = RunDir(resume)
        cfg = run_dir.load_config()
        if set_:
            cfg = extend_config(cfg, set_)
        previous = run_dir.summary() or {}
        if previous.get("status") == "completed" and not set_:
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
            on_resume=lambda step: typer.echo(f"{resume}: resuming at step {step}", err=True),
        )
    else:
        if config is None:
            raise ConfigError("CONFIG: a config file is required (or --resume RUN_DIR)")
        if allow_data_change:
            raise ConfigError("--allow-data-change: only with --resume")
        cfg = load_config(config, set_)
        if out is None:
            stem = folder_name(cfg.name or config.stem)
            out = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = train(cfg, out)
        resume = out
    final = ", ".join(f"{k} {v:.3f}" for k, v in summary["final"].items() if "." not in k)
    typer.echo(f"{resume}: {summary['status']} in {summary['wall_s']:.1f}s; {final}")


@app.command()
def data(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config whose task is written."),
    out: Path = typer.Option(..., "--out", help="Folder for the dataset files."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Write the dataset of a config's task (two-hop: the Grokked JSON layout)."""
    from reasonlab.core.files import require_empty_folder
    from reasonlab.tasks import write_dataset

    cfg = load_config(config, set_)
    require_empty_folder(out)
    counts = write_dataset(cfg.task, out)
    typer.echo(f"{out}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


@app.command()
def study(
    name: str | None = typer.Argument(None, metavar="NAME", help="Study name (see --list)."),
    preset: str = typer.Option(
        "cpu",
        "--preset",
        help="cpu (minutes on a laptop), paper (a GPU), or another preset the study lists.",
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, help="Seeds per configuration (default: the study's, most 1)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Study folder (default runs/NAME-PRESET)."),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override a config key in every run, e.g. --set train.lr=3e-4 (repeatable).",
    ),
    list_: bool = typer.Option(False, "--list", help="List the ready studies."),
    reuse: Path | None = typer.Option(
        None, "--reuse", help="Copy completed runs with identical configs from this study folder."
    ),
    jobs: int = typer.Option(
        1, "--jobs", min=1, help="Runs trained at once, each in its own process (e.g. on a GPU)."
    ),
) -> None:
    """Run a ready study (a set of runs) and write summary.json and report.html."""
    from reasonlab.studies import STUDIES, run_study

    interrupt_on_sigterm()
    if list_:
        for study_name, spec in STUDIES.items():
            typer.echo(f"{study_name}: {spec.description} (presets: {', '.join(spec.presets)})")
        return
    if name is None:
        raise ConfigError("NAME: give a study name (reasonlab study --list)")
    out = out or Path("runs") / f"{name}-{preset}"
    if reuse is not None and not reuse.is_dir():
        raise ConfigError(f"--reuse: {reuse} is not a folder")
    result = run_study(
        name, preset=preset, seeds=seeds, out=out, overrides=set_, reuse=reuse, jobs=jobs
    )
    typer.echo(f"{out}: {len(result['runs'])} runs; report {out / 'report.html'}")


@analyze_app.command("logit-lens")
def analyze_logit_lens(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A two-hop run folder."),
    probe: str = typer.Option(
        "test_inferred_ood",
        "--probe",
        help=PROBE_HELP,
    ),
    target: str = typer.Option(
        "bridge",
        "--target",
        help="bridge or tail; on k-hop probes bridge1, bridge2, ... or tail (bridge = bridge1).",
    ),
    checkpoint: str = typer.Option("last", "--checkpoint", help=CHECKPOINT_HELP),
    queries: int = typer.Option(300, "--queries", min=1, help="Number of queries."),
    allow_data_change: bool = typer.Option(
        False,
        "--allow-data-change",
        help=ALLOW_DATA_CHANGE_HELP,
    ),
) -> None:
    """Rank / MRR of a bridge or the tail at every layer x position: JSON + PNG per checkpoint
    in RUN_DIR/analysis (named ...-stepN), and an over-training pair for --checkpoint all."""
    from reasonlab.analysis.runs import run_logit_lens

    result = run_logit_lens(
        run_dir, probe, target, checkpoint, queries, allow_data_change=allow_data_change
    )
    target = result["target"]
    for entry in result["checkpoints"]:
        layer = entry["first_top1_layer"]
        where = "never" if layer is None else result["layers"][layer]
        typer.echo(
            f"step {entry['step']}: {target} top-1 at position "
            f"{result['positions'][result['read_position']]} from layer {where}; "
            f"top-1 share by layer {[round(v, 2) for v in entry['top1_at_read']]}"
        )
    typer.echo(f"wrote {Path(run_dir) / 'analysis'}")


@analyze_app.command("decay")
def analyze_decay(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A Mamba run trained on COPY."),
    probe: str | None = typer.Option(
        None, "--probe", help="A len{n} probe of the run (default: the longest)."
    ),
    checkpoint: str = typer.Option("last", "--checkpoint", help=CHECKPOINT_HELP),
    rows: int = typer.Option(200, "--rows", min=1, help="Strings of the probe analysed."),
    allow_data_change: bool = typer.Option(
        False, "--allow-data-change", help=ALLOW_DATA_CHANGE_HELP
    ),
) -> None:
    """The decay probe (arXiv 2410.03810, Theorem 1): per layer, the cumulative decays and the
    scores c_i . b_j between each copied token and the position that writes its copy, against
    distance, beside the growth the theorem says is needed: JSON + PNG in RUN_DIR/analysis."""
    from reasonlab.analysis.ssm import run_decay

    result = run_decay(run_dir, checkpoint, probe, rows, allow_data_change)
    for entry in result["checkpoints"]:
        for layer in entry["layers"]:
            far = layer["distances"][-1]
            typer.echo(
                f"step {entry['step']} layer {layer['layer']}: median step decay "
                f"{layer['step_decay_median']:.4f}; at distance {far}: log10 c.b "
                f"{layer['log10_cb'][-1]:.2f}, needed {layer['log10_required'][-1]:.2f}"
            )
    typer.echo(f"wrote {Path(run_dir) / 'analysis'}")


@analyze_app.command("khop")
def analyze_khop(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A two-hop run with k-hop probes."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last or a step."),
) -> None:
    """k-hop questions answered by chained CoT queries (two-hop queries in the run's pattern,
    each started from the previous answer; an odd last hop an atomic query) beside the direct
    k-hop probe, on the same chains: RUN_DIR/analysis/khop-stepN.json."""
    from reasonlab.analysis.khop import run_khop
    from reasonlab.core.files import make_dir
    from reasonlab.runs.folder import write_json

    if checkpoint == "all":
        raise ConfigError("--checkpoint: the k-hop check takes last or one step, not all")
    result = run_khop(run_dir, checkpoint)
    if not result["probes"]:
        raise ConfigError(f"task.khop: {run_dir} has no k-hop probe (set task.khop, e.g. [3])")
    for name, scores in result["probes"].items():
        steps = " -> ".join(f"{a:.3f}" for a in scores["after_each_query"])
        typer.echo(
            f"{name} ({scores['chains']} chains): direct {scores['direct']:.3f}, chained CoT "
            f"{scores['accuracy']:.3f} (after each query: {steps})"
        )
    target = Path(run_dir) / "analysis" / f"khop-step{result['step']}.json"
    make_dir(target.parent)
    write_json(target, result)
    typer.echo(f"wrote {target}")


@analyze_app.command("dual")
def analyze_dual(
    run_dir: Path | None = typer.Argument(
        None, metavar="[RUN_DIR]", help="A GPT run folder (omit for random inputs)."
    ),
    layer: int = typer.Option(0, "--layer", help="Block of the head (with RUN_DIR)."),
    head: int = typer.Option(0, "--head", help="Head within the block (with RUN_DIR)."),
    m: str | None = typer.Option(
        None, "--m", help="Numbers of random features, comma-separated [16,64,256,1024,4096]."
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, help="Random draws per m (and query) [32]."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Without RUN_DIR: write analysis/dual.json + .png under this folder."
    ),
    checkpoint: str = typer.Option("last", "--checkpoint", help="STEP or last."),
) -> None:
    """Softmax attention for one query as one gradient step of a dual linear model (arXiv
    2310.13220): the gap between the dual model and random-feature attention (rounding), and
    between random-feature and exact attention against m, with its log-log slope (-0.5 is the
    Monte Carlo rate). With RUN_DIR: a trained head, JSON + PNG in RUN_DIR/analysis
    (dual-layerL-headH)."""
    from reasonlab.analysis.dual import DEFAULT_MS, DEFAULT_SEEDS, run_dual

    try:
        ms = DEFAULT_MS if m is None else [int(part) for part in m.split(",")]
    except ValueError:
        raise ConfigError(f"--m: expected comma-separated integers, got {m!r}") from None
    seeds = DEFAULT_SEEDS if seeds is None else seeds
    result = run_dual(run_dir, layer, head, ms, seeds, checkpoint, out)
    typer.echo(f"{'m':>6}  {'dual vs rf':>10}  {'rf vs softmax':>13}")
    for features, dual_gap, rf_gap in zip(
        result["ms"], result["dual_vs_rf"], result["rf_vs_softmax"], strict=True
    ):
        typer.echo(f"{features:>6}  {dual_gap:>10.2e}  {rf_gap:>13.4f}")
    slope = result["slope"]
    typer.echo("slope: " + ("n/a (one m)" if slope is None else f"{slope:.3f} (Monte Carlo: -0.5)"))
    if run_dir is not None:
        typer.echo(f"wrote {Path(run_dir) / 'analysis'}")
    elif out is not None:
        typer.echo(f"wrote {out / 'analysis'}")


@analyze_app.command("trace")
def analyze_trace(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A two-hop run folder."),
    probe: str = typer.Option(
        "test_inferred_ood",
        "--probe",
        help=PROBE_HELP,
    ),
    change: str = typer.Option(
        "bridge",
        "--change",
        help="head, r1, r2 or bridge (only the written bridge); on k-hop probes also r3, ... "
        "and bridge1, bridge2, ...",
    ),
    target: str = typer.Option(
        "tail", "--target", help="bridge or tail; on k-hop probes bridge1, bridge2, ... or tail."
    ),
    hook: str = typer.Option(
        "resid", "--hook", help="resid, or a component: attn_out, mlp_out (gpt); mixer_out (mamba)."
    ),
    checkpoint: str = typer.Option("last", "--checkpoint", help=CHECKPOINT_HELP),
    queries: int = typer.Option(300, "--queries", min=1, help="Number of queries."),
    allow_data_change: bool = typer.Option(
        False,
        "--allow-data-change",
        help=ALLOW_DATA_CHANGE_HELP,
    ),
) -> None:
    """Causal tracing: patch one layer x position from a counterfactual. JSON + PNG per
    checkpoint in RUN_DIR/analysis (named ...-stepN), and an over-training pair for
    --checkpoint all."""
    from reasonlab.analysis.runs import run_trace

    result = run_trace(
        run_dir,
        probe,
        change,
        target,
        hook,
        checkpoint,
        queries,
        allow_data_change=allow_data_change,
    )
    target = result["target"]
    for entry in result["checkpoints"]:
        typer.echo(
            f"step {entry['step']}, {result['queries']} queries: clean {target} top-1 "
            f"{entry['clean_top1']:.2f}, counterfactual {entry['corrupt_top1']:.2f}"
        )
        typer.echo(
            "share still answering the clean target (rows: layers, columns: "
            + " ".join(result["positions"])
            + ")"
        )
        for label, row in zip(result["layers"], entry["top1"], strict=True):
            cells = " ".join("  -  " if v is None else f"{v:5.2f}" for v in row)
            typer.echo(f"  {label:>5} {cells}")
    typer.echo(f"wrote {Path(run_dir) / 'analysis'}")


# Shapes of ``bench step`` when not given: the quick CoT model, and a COPY-like Mamba; --shape
# wide is the GPT 8 x 512 on the same batch.
STEP_SHAPES = {
    "gpt": {"n_layers": 4, "d_model": 128, "batch_size": 512, "seq_len": 5},
    "mamba": {"n_layers": 2, "d_model": 128, "batch_size": 64, "seq_len": 41},
}
WIDE_GPT = {"n_layers": 8, "d_model": 512}


@app.command()
def bench(
    name: str = typer.Argument(
        "step",
        metavar="NAME",
        help="step: one training step vs Hugging Face (GPT-2, or with --model mamba mambapy and "
        "MambaForCausalLM); scan: Mamba's selective scan (forward + backward) vs mambapy's "
        "parallel scan and the sequential loop; eval: evaluation of a trained run's probes, "
        "incremental decoding vs full recomputation (--run).",
    ),
    model: str = typer.Option("gpt", "--model", help="step: gpt or mamba."),
    shape: str = typer.Option(
        "quick", "--shape", help="step gpt: quick (4 x 128) or wide (8 x 512), batch 512 x 5."
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="step gpt: fp32, bf16 (autocast, both models) or both; auto: fp32, and bf16 too "
        "where the CPU has bf16 matrix units (or on CUDA).",
    ),
    n_layers: int | None = typer.Option(
        None, "--layers", min=1, help="step: blocks (default: gpt 4, mamba 2)."
    ),
    d_model: int | None = typer.Option(
        None, "--width", min=1, help="step: residual width (default 128)."
    ),
    n_heads: int = typer.Option(4, "--heads", min=1, help="step: attention heads (gpt)."),
    device: str = typer.Option("cpu", "--device", help="step: cpu, cuda or cuda:N."),
    batch_size: int | None = typer.Option(
        None,
        "--batch",
        min=1,
        help="Sequences per step (default: step gpt 512, mamba 64; scan 16).",
    ),
    seq_len: int | None = typer.Option(
        None, "--seq-len", min=2, help="step: tokens per sequence (default: gpt 5, mamba 41)."
    ),
    repeats: int | None = typer.Option(
        None,
        "--repeats",
        min=1,
        help="Timed runs per method after an untimed warm-up (default: step 20, scan 5, eval 3).",
    ),
    lengths: str = typer.Option(
        "64,256,1024", "--lengths", help="scan: comma-separated sequence lengths."
    ),
    d_inner: int = typer.Option(256, "--d-inner", min=1, help="scan: channels (d_inner)."),
    d_state: int = typer.Option(16, "--d-state", min=1, help="scan, step mamba: state size N."),
    memory: bool = typer.Option(
        True, "--memory/--no-memory", help="scan: also measure peak memory (a subprocess per case)."
    ),
    run_dir: Path | None = typer.Option(None, "--run", help="eval: a trained run folder."),
) -> None:
    """Speed benchmarks against real peers, printed as JSON (step: median seconds per step;
    scan: a markdown table on stderr, then JSON)."""
    import json

    if name == "scan":
        from reasonlab.bench.scan import format_scan_table, scan_benchmark

        try:
            scan_lengths = [int(part) for part in lengths.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--lengths: {lengths!r} is not a list of integers") from None
        if not scan_lengths or min(scan_lengths) < 1:
            raise ConfigError(f"--lengths: {lengths!r} needs positive integers")
        result = scan_benchmark(
            scan_lengths,
            batch=batch_size or 16,
            d_inner=d_inner,
            d_state=d_state,
            repeats=repeats or 5,
            memory=memory,
        )
        typer.echo(format_scan_table(result), err=True)
        typer.echo(json.dumps(result, indent=2))
        return
    if name == "eval":
        if run_dir is None:
            raise ConfigError("--run: bench eval needs a trained run folder")
        from reasonlab.bench.evaluation import eval_benchmark, format_eval_table

        result = eval_benchmark(run_dir, repeats=repeats or 3)
        typer.echo(format_eval_table(result), err=True)
        typer.echo(json.dumps(result, indent=2))
        return
    if name != "step":
        raise ConfigError(f"NAME: unknown benchmark {name!r} (known: step, scan, eval)")
    if model not in STEP_SHAPES:
        raise ConfigError(f"--model: {model!r} is not one of {', '.join(STEP_SHAPES)}")
    if shape not in ("quick", "wide"):
        raise ConfigError(f"--shape: {shape!r} is not quick or wide")
    if precision not in ("auto", "fp32", "bf16", "both"):
        raise ConfigError(f"--precision: {precision!r} is not auto, fp32, bf16 or both")
    defaults = {**STEP_SHAPES[model], **(WIDE_GPT if shape == "wide" else {})}
    n_layers = n_layers or defaults["n_layers"]
    d_model = d_model or defaults["d_model"]
    batch_size = batch_size or defaults["batch_size"]
    seq_len = seq_len or defaults["seq_len"]
    if model == "mamba":
        from reasonlab.bench.step import mamba_step_time

        result = mamba_step_time(
            n_layers,
            d_model,
            d_state,
            batch_size=batch_size,
            seq_len=seq_len,
            repeats=repeats or 10,
            device=device,
        )
        typer.echo(json.dumps(result, indent=2))
        return
    from reasonlab.bench.step import bench_device, format_step_table, step_time
    from reasonlab.training.precision import auto_uses_bf16

    if d_model % n_heads:
        raise ConfigError(f"--width: {d_model} is not divisible by --heads {n_heads}")
    precisions = {
        "auto": ("fp32", "bf16") if auto_uses_bf16(bench_device(device)) else ("fp32",),
        "both": ("fp32", "bf16"),
    }.get(precision, (precision,))
    result = step_time(
        n_layers,
        d_model,
        n_heads,
        batch_size=batch_size,
        seq_len=seq_len,
        repeats=repeats or 20,
        precisions=precisions,
        device=device,
    )
    typer.echo(format_step_table(result), err=True)
    typer.echo(json.dumps(result, indent=2))


@app.command()
def sweep(
    spec: Path = typer.Argument(
        ..., metavar="SPEC.yaml", help="A sweep spec (reasonlab.experiments.sweep)."
    ),
    out: Path = typer.Option(..., "--out", help="The sweep's folder (runs under OUT/runs)."),
    executor: str = typer.Option("local", "--executor", help="local or ray."),
    jobs: int = typer.Option(
        1, "--jobs", min=1, help="local: trials trained at once, each in its own process."
    ),
    address: str | None = typer.Option(
        None, "--address", help="ray: a running cluster's address (default: start Ray here)."
    ),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="ray: CPUs per trial."),
    gpus_per_trial: float = typer.Option(
        0.0, "--gpus-per-trial", help="ray: GPUs per trial (a fraction shares one)."
    ),
) -> None:
    """Expand a sweep spec into runs and train them (again: finished trials are skipped, stopped
    ones resumed; a failing trial is recorded and the rest go on). Exit 1 if any trial failed."""
    from reasonlab.experiments.sweep import run_sweep

    interrupt_on_sigterm()
    result = run_sweep(spec, out, executor, jobs, address, cpus_per_trial, gpus_per_trial)
    trials = result["trials"]
    failed = {n: t for n, t in trials.items() if t.get("status") != "completed"}
    typer.echo(f"{out}: {len(trials) - len(failed)} of {len(trials)} trials completed")
    for name, trial in failed.items():
        typer.echo(f"  {name}: {trial.get('status')}: {trial.get('error', '')}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command("runs")
def runs_command(
    root: Path = typer.Argument(..., metavar="DIR", help="A folder of runs (a study's, or any)."),
    where: str | None = typer.Option(
        None,
        "--where",
        help='DuckDB SQL filter over the runs, e.g. "model.n_layers = 4 AND '
        'final.test_inferred_ood >= 0.9" (sections are structs; quote keys holding a dot: '
        'final."test.k10").',
    ),
    columns: str | None = typer.Option(
        None,
        "--columns",
        help="Comma-separated columns or patterns (final.*, model.*); default: run, status, "
        "step, the config keys that differ between runs, every final metric.",
    ),
    fmt: str = typer.Option("table", "--format", help="table, csv, json or parquet."),
    output: Path | None = typer.Option(
        None, "--output", help="Write to this file (needed for parquet) instead of stdout."
    ),
) -> None:
    """List the runs under DIR with their config values and summary metrics, read from the run
    folders themselves (DuckDB over their JSON; in Python: reasonlab.runs.table.runs_frame)."""
    from reasonlab.runs.table import (
        FORMATS,
        format_rows,
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
    text = format_rows(rows, names, fmt) if rows else ("[]" if fmt == "json" else "")
    if output is not None:
        output.write_text(text + "\n")
        typer.echo(f"wrote {output}: {len(rows)} runs")
    elif text:
        typer.echo(text)
    if not rows and fmt == "table":
        typer.echo(f"{root}: no runs" + (" match --where" if where else ""), err=True)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run folder."),
    out: Path = typer.Argument(
        ..., metavar="OUT", help="A new (or empty) folder for the exported model."
    ),
    format_: str = typer.Option(
        "hf", "--format", help="hf: a Hugging Face checkpoint (GPT-2, or MambaForCausalLM)."
    ),
    checkpoint: str = typer.Option("last", "--checkpoint", help="STEP or last."),
) -> None:
    """Export a run's model: AutoModelForCausalLM.from_pretrained(OUT) gives the same logits."""
    from reasonlab.interop.huggingface import export_run

    record = export_run(run_dir, out, fmt=format_, checkpoint=checkpoint)
    typer.echo(f"{out}: step {record['step']} of {run_dir} as {format_}")


@app.command("config")
def config_keys(
    config: Path | None = typer.Argument(
        None, metavar="CONFIG", help="A YAML config to print resolved (every key filled in)."
    ),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    defaults: bool = typer.Option(
        False, "--defaults", help="Print every config key with its default and meaning."
    ),
    format_: str = typer.Option(
        "yaml",
        "--format",
        help="With --defaults: yaml (a config file with a comment on every key) or markdown "
        "(the table in README.md).",
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


def _interrupted_line(args: list[str]) -> str:
    """One line for an interrupt (Ctrl-C, SIGTERM): how far the run got, what it kept and the
    command that continues it. The run comes from the record the training progress leaves."""
    from reasonlab.runs.folder import RunDir
    from reasonlab.training.progress import current_run

    record, command = current_run(), args[0] if args else ""
    run = RunDir(record.folder) if record is not None else None
    try:
        training = run is not None and (run.summary() or {}).get("status") == "interrupted"
    except ConfigError:
        training = False
    state = "interrupted"
    if training:
        steps = run.checkpoint_steps()
        kept = f"checkpoint of step {steps[-1]} kept" if steps else "no checkpoint yet"
        state = f"interrupted at step {record.step} of {run.path} ({kept})"
    if command == "study":
        return f"{state}; completed runs are kept; resume with: reasonlab {shlex.join(args)}"
    if command == "run" and training:
        return f"{state}; resume with: reasonlab run --resume {shlex.quote(str(run.path))}"
    if command == "run":
        return "interrupted before training started; nothing to resume"
    return state


def _is_usage_error(error: Exception) -> bool:
    """Click's (or Typer's vendored click's) usage errors: bad option, missing argument, ..."""
    return callable(getattr(error, "format_message", None)) and getattr(error, "exit_code", 0) == 2


def main(argv: list[str] | None = None) -> None:
    from reasonlab.training.progress import forget_run

    args = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    command = get_command(app)
    # Bare `reasonlab` (or `reasonlab analyze`) is its --help (exit 0), not "Missing command".
    if not args or (len(args) == 1 and hasattr(command.commands.get(args[0]), "commands")):
        args = [*args, "--help"]
    forget_run()  # a run record left by an earlier call in this process says nothing about this one
    try:
        code = command.main(args=args, standalone_mode=False, prog_name="reasonlab")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(_interrupted_line(args), file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if type(error).__name__ == "Abort":
            print(_interrupted_line(args), file=sys.stderr)
            sys.exit(130)
        if not _is_usage_error(error):
            raise
        message = " ".join(error.format_message().split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if code == 130:  # Typer turns KeyboardInterrupt (Ctrl-C, or SIGTERM in run/study) into 130
        print(_interrupted_line(args), file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
