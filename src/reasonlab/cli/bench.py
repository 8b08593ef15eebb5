"""``reasonlab bench``: speed benchmarks against real peers, one sub-command per benchmark with
only its own options, each printing JSON on stdout (most with a markdown table on stderr).

``reasonlab bench`` with no benchmark named (or with options first) runs ``step``, as it did
when the benchmark was an argument; an unknown name is a bad input (exit 2) that lists them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from reasonlab.cli.options import (
    batch_option,
    d_state_option,
    overrides_option,
    repeats_option,
)
from reasonlab.config import ConfigError


class BenchGroup(TyperGroup):
    """The ``bench`` group: ``step`` by default, and an unknown benchmark named in one line."""

    default_command = "step"

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] not in ctx.help_option_names):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: typer.Context, args: list[str]
    ) -> tuple[str | None, Any, list[str]]:
        if args and args[0] not in self.commands:
            known = ", ".join(self.commands)
            raise ConfigError(f"NAME: unknown benchmark {args[0]!r} (known: {known})")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=BenchGroup,
    help="Speed benchmarks against real peers, printed as JSON (most with a markdown table on "
    "stderr). Without a benchmark named: step.",
)

# Shapes of ``bench step`` when not given: the quick CoT model, and a COPY-like Mamba; --shape
# wide is the GPT 8 x 512 on the same batch.
STEP_SHAPES = {
    "gpt": {"n_layers": 4, "d_model": 128, "batch_size": 512, "seq_len": 5},
    "mamba": {"n_layers": 2, "d_model": 128, "batch_size": 64, "seq_len": 41},
}
WIDE_GPT = {"n_layers": 8, "d_model": 512}


@app.command("step")
def step(
    model: str = typer.Option("gpt", "--model", help="gpt or mamba."),
    shape: str = typer.Option(
        "quick", "--shape", help="gpt: quick (4 x 128) or wide (8 x 512), batch 512 x 5."
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="gpt: fp32, bf16 (autocast, both models) or both; auto: fp32, and bf16 too "
        "where the CPU has bf16 matrix units (or on CUDA).",
    ),
    n_layers: int | None = typer.Option(
        None, "--layers", min=1, help="Blocks (default: gpt 4, mamba 2)."
    ),
    d_model: int | None = typer.Option(
        None, "--width", min=1, help="Residual width (default 128)."
    ),
    n_heads: int = typer.Option(4, "--heads", min=1, help="Attention heads (gpt)."),
    d_state: int = d_state_option("mamba: state size N."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    batch_size: int | None = batch_option("Sequences per step (default: gpt 512, mamba 64)."),
    seq_len: int | None = typer.Option(
        None, "--seq-len", min=2, help="Tokens per sequence (default: gpt 5, mamba 41)."
    ),
    repeats: int | None = repeats_option(
        "Timed runs per method after an untimed warm-up (default: gpt 20, mamba 10)."
    ),
) -> None:
    """One training step vs Hugging Face (GPT-2, or with --model mamba mambapy and
    MambaForCausalLM): median seconds per step, as JSON."""
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


@app.command("scan")
def scan(
    lengths: str = typer.Option(
        "64,256,1024", "--lengths", help="Comma-separated sequence lengths."
    ),
    batch_size: int | None = batch_option("Sequences per scan (default 16)."),
    d_inner: int = typer.Option(256, "--d-inner", min=1, help="Channels (d_inner)."),
    d_state: int = d_state_option("State size N."),
    repeats: int | None = repeats_option(
        "Timed runs per method after an untimed warm-up (default 5)."
    ),
    memory: bool = typer.Option(
        True, "--memory/--no-memory", help="Also measure peak memory (a subprocess per case)."
    ),
) -> None:
    """Mamba's selective scan (forward + backward) vs mambapy's parallel scan and the sequential
    loop: a markdown table on stderr, then JSON."""
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


@app.command("eval")
def evaluation(
    run_dir: Path | None = typer.Option(None, "--run", help="A trained run folder."),
    repeats: int | None = repeats_option(
        "Timed runs per method after an untimed warm-up (default 3)."
    ),
) -> None:
    """Evaluation of a trained run's probes, incremental decoding vs full recomputation: a
    markdown table on stderr, then JSON."""
    if run_dir is None:
        raise ConfigError("--run: bench eval needs a trained run folder")
    from reasonlab.bench.evaluation import eval_benchmark, format_eval_table

    result = eval_benchmark(run_dir, repeats=repeats or 3)
    typer.echo(format_eval_table(result), err=True)
    typer.echo(json.dumps(result, indent=2))


@app.command("study")
def study(
    name: str = typer.Argument(..., metavar="NAME", help="A ready study (reasonlab study --list)."),
    preset: str = typer.Option("cpu", "--preset", help="The study's preset."),
    pack: str = typer.Option(
        "8",
        "--pack",
        help="The packed case's --pack (auto, off or K; default 8, what auto takes on CUDA).",
    ),
    seeds: int | None = typer.Option(None, "--seeds", min=1, help="Seeds per configuration."),
    set_: list[str] = overrides_option("Override a config key in every run (repeatable)."),
) -> None:
    """A study's runs trained packed and unpacked, each into a temporary folder: wall time, runs
    per hour and utilization (a markdown table on stderr, then JSON). Training only: the
    analysis and the report, the same for both, are left out."""
    import contextlib
    import sys

    from reasonlab.bench.study import format_study_table, time_study
    from reasonlab.experiments.study import run_study
    from reasonlab.experiments.study_spec import STUDIES, study_configs
    from reasonlab.experiments.trials import parse_pack
    from reasonlab.training.loop import resolve_device

    parse_pack(pack)
    if name not in STUDIES:
        raise ConfigError(f"NAME: unknown study {name!r} (known: {', '.join(STUDIES)})")
    spec = STUDIES[name]
    if preset not in spec.presets:
        raise ConfigError(f"--preset: {preset!r} is not a preset of {name}")
    configs = study_configs(spec, preset, spec.seeds if seeds is None else seeds, set_)
    device = str(resolve_device(next(iter(configs.values())).train.device))

    def train(folder: Path, pack_value: str, extra: tuple[str, ...] = ()) -> int:
        with contextlib.redirect_stdout(sys.stderr):  # the runs' lines; stdout is the JSON
            result = run_study(name, preset, seeds, folder, [*set_, *extra], pack=pack_value)
        return len(result.runs)

    def warmup(folder: Path, pack_value: str) -> int:  # one step per run, untimed
        return train(folder, pack_value, ("train.steps=1", "train.warmup_steps=0"))

    cases = {"unpacked": "off", "packed": pack}
    result = time_study(train, cases, device, warmup)
    result |= {"study": name, "preset": preset, "overrides": list(set_)}
    typer.echo(format_study_table(result), err=True)
    typer.echo(json.dumps(result, indent=2))
