"""``reasonlab analyze``: open a trained run up (logit lens, causal tracing, the decay probe,
chained k-hop queries, the dual-model check); each command writes JSON (+ PNG) under
RUN_DIR/analysis and prints what it found. The logit lens and tracing take the run of any token
task (two-hop, k-hop, COPY, DP; ``analysis/runs.py`` and ``analysis/token_runs.py``); a run of
in-context regression is refused with one line (no tokens to read)."""

from __future__ import annotations

from pathlib import Path

import typer

from reasonlab.cli.options import (
    allow_data_change_option,
    checkpoint_option,
    out_option,
    probe_option,
    queries_option,
    run_dir_argument,
    seeds_option,
)
from reasonlab.config import ConfigError

app = typer.Typer(help="Open a trained run up: logit lens, causal tracing, the decay probe.")

TOKEN_RUN = "A run of a token task (two-hop, COPY, DP; not in-context regression)."
LENS_PROBE = (
    "Probe whose queries are analysed [test_inferred_ood if the task has it, else its first]."
)


@app.command("logit-lens")
def logit_lens(
    run_dir: Path = run_dir_argument(TOKEN_RUN),
    probe: str | None = probe_option(None, LENS_PROBE),
    target: str | None = typer.Option(
        None,
        "--target",
        help="Two-hop: bridge (default) or tail; on k-hop probes bridge1, bridge2, ... or tail "
        "(bridge = bridge1). Other token tasks: scored (default: at every scored position the "
        "token the model should write there), first (the first scored token) or a stage of the "
        "probe (COPY first, last; DP answer).",
    ),
    checkpoint: str = checkpoint_option(),
    queries: int = queries_option(),
    allow_data_change: bool = allow_data_change_option(),
) -> None:
    """Rank / MRR of a target token (a bridge or the tail; on other token tasks the token due at
    each scored position) at every layer x position: JSON + PNG per checkpoint in
    RUN_DIR/analysis (named ...-stepN), and an over-training pair for --checkpoint all."""
    from reasonlab.analysis.runs import run_logit_lens

    result = run_logit_lens(
        run_dir, probe, target, checkpoint, queries, allow_data_change=allow_data_change
    )
    target = result["target"]
    for entry in result["checkpoints"]:
        layer = entry["first_top1_layer"]
        where = "never" if layer is None else result["layers"][layer]
        if "read_position" in result:
            what = f"{target} top-1 at position {result['positions'][result['read_position']]}"
        else:
            what = "half or more of the scored tokens top-1"
        typer.echo(
            f"step {entry['step']}: {what} from layer {where}; "
            f"top-1 share by layer {[round(v, 2) for v in entry['top1_at_read']]}"
        )
    typer.echo(f"wrote {Path(run_dir) / 'analysis'}")


@app.command("decay")
def decay(
    run_dir: Path = run_dir_argument("A Mamba run trained on COPY."),
    probe: str | None = probe_option(None, "A len{n} probe of the run (default: the longest)."),
    checkpoint: str = checkpoint_option(),
    rows: int = typer.Option(200, "--rows", min=1, help="Strings of the probe analysed."),
    allow_data_change: bool = allow_data_change_option(),
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


@app.command("khop")
def khop(
    run_dir: Path = run_dir_argument("A two-hop run with k-hop probes."),
    checkpoint: str = checkpoint_option("last or a step."),
) -> None:
    """k-hop questions answered by chained CoT queries (two-hop queries in the run's pattern,
    each started from the previous answer; an odd last hop an atomic query) beside the direct
    k-hop probe, on the same chains: RUN_DIR/analysis/khop-stepN.json."""
    from reasonlab.analysis.khop import run_khop
    from reasonlab.core.files import make_dir, write_json

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


@app.command("dual")
def dual(
    run_dir: Path | None = typer.Argument(
        None, metavar="[RUN_DIR]", help="A GPT run folder (omit for random inputs)."
    ),
    layer: int = typer.Option(0, "--layer", help="Block of the head (with RUN_DIR)."),
    head: int = typer.Option(0, "--head", help="Head within the block (with RUN_DIR)."),
    m: str | None = typer.Option(
        None, "--m", help="Numbers of random features, comma-separated [16,64,256,1024,4096]."
    ),
    seeds: int | None = seeds_option("Random draws per m (and query) [32]."),
    out: Path | None = out_option(
        "Without RUN_DIR: write analysis/dual.json + .png under this folder."
    ),
    checkpoint: str = checkpoint_option("STEP or last."),
) -> None:
    """Softmax attention for one query as one gradient step of a dual linear model (arXiv
    2310.13220): the gap between the dual model and random-feature attention (rounding), and
    between random-feature and exact attention against m, with its log-log slope (-0.5 is the
    Monte Carlo rate). With RUN_DIR: a trained head, JSON + PNG in RUN_DIR/analysis
    (dual-layerL-headH)."""
    from reasonlab.analysis.dual import DEFAULT_MS, DEFAULT_SEEDS
    from reasonlab.analysis.dual_check import run_dual

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


@app.command("trace")
def trace(
    run_dir: Path = run_dir_argument(TOKEN_RUN),
    probe: str | None = probe_option(None, LENS_PROBE),
    change: str | None = typer.Option(
        None,
        "--change",
        help="Two-hop: head, r1, r2 or bridge (default; only the written bridge); on k-hop "
        "probes also r3, ... and bridge1, bridge2, ... Other token tasks: row (another row of "
        "the probe, same length, with a different target token).",
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="Two-hop: bridge or tail (default); on k-hop probes bridge1, bridge2, ... or tail. "
        "Other token tasks: first (default: the first scored token) or a stage of the probe "
        "(COPY first, last; DP answer).",
    ),
    hook: str = typer.Option(
        "resid", "--hook", help="resid, or a component: attn_out, mlp_out (gpt); mixer_out (mamba)."
    ),
    checkpoint: str = checkpoint_option(),
    queries: int = queries_option(),
    allow_data_change: bool = allow_data_change_option(),
) -> None:
    """Causal tracing: patch one layer x position from a counterfactual (two-hop: a chain with
    one part changed; other token tasks: another row of the probe). JSON + PNG per checkpoint in
    RUN_DIR/analysis (named ...-stepN), and an over-training pair for --checkpoint all."""
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
