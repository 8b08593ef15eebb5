"""Options and arguments that several commands share, declared once: each function returns the
Typer definition to use as a parameter's default (``set_: list[str] = overrides_option()``)."""

from __future__ import annotations

from typing import Any

import typer

SET_HELP = (
    "Override a config key, e.g. --set train.lr=3e-4 (repeatable). A mapping merges into its "
    "section: --set 'train={steps: 5}' sets train.steps and keeps the other keys of train."
)
PROBE_HELP = "Which probe's queries: a two-hop or k-hop probe (e.g. test_inferred_3hop_ood)."
CHECKPOINT_HELP = "STEP, last or all (all also plots over training)."
ALLOW_DATA_CHANGE_HELP = (
    "Analyse although the task rebuilds to other data than the run recorded "
    "(noted in the output JSON)."
)


def overrides_option(help_text: str = SET_HELP) -> Any:
    """``--set key.sub=value`` (repeatable): config keys overridden."""
    return typer.Option([], "--set", help=help_text)


def out_option(help_text: str, *, required: bool = False) -> Any:
    """``--out DIR``: where a command writes."""
    return typer.Option(... if required else None, "--out", help=help_text)


def run_dir_argument(help_text: str) -> Any:
    """``RUN_DIR``: a run folder to read."""
    return typer.Argument(..., metavar="RUN_DIR", help=help_text)


def checkpoint_option(help_text: str = CHECKPOINT_HELP) -> Any:
    """``--checkpoint``: which of a run's checkpoints (default: the last)."""
    return typer.Option("last", "--checkpoint", help=help_text)


def probe_option(default: str | None = "test_inferred_ood", help_text: str = PROBE_HELP) -> Any:
    """``--probe``: the probe of a run whose queries are analysed."""
    return typer.Option(default, "--probe", help=help_text)


def queries_option() -> Any:
    """``--queries``: how many of the probe's queries are analysed."""
    return typer.Option(300, "--queries", min=1, help="Number of queries.")


def allow_data_change_option(help_text: str = ALLOW_DATA_CHANGE_HELP) -> Any:
    """``--allow-data-change``: go on although the task rebuilds to other data than recorded."""
    return typer.Option(False, "--allow-data-change", help=help_text)


def seeds_option(help_text: str) -> Any:
    """``--seeds K``: seeds (random draws) per configuration; none: the command's default."""
    return typer.Option(None, "--seeds", min=1, help=help_text)


def jobs_option(help_text: str) -> Any:
    """``--jobs N``: runs trained at once, each in its own process."""
    return typer.Option(1, "--jobs", min=1, help=help_text)


def format_option(default: str, help_text: str) -> Any:
    """``--format``: the form of a command's output."""
    return typer.Option(default, "--format", help=help_text)


def repeats_option(help_text: str) -> Any:
    """``--repeats``: timed runs of a benchmark; none: the benchmark's default."""
    return typer.Option(None, "--repeats", min=1, help=help_text)


def batch_option(help_text: str) -> Any:
    """``--batch``: sequences per benchmarked step; none: the benchmark's default."""
    return typer.Option(None, "--batch", min=1, help=help_text)


def d_state_option(help_text: str) -> Any:
    """``--d-state``: Mamba's state size N in a benchmark."""
    return typer.Option(16, "--d-state", min=1, help=help_text)


PACK_HELP = (
    "Train compatible runs (same model shape, steps, batch, device, precision) together as one "
    "batched model, each into its own run folder: auto (off on a CPU, packs of 8 on CUDA), off, "
    "or K (packs of at most K)."
)


def pack_option() -> Any:
    """``--pack auto|off|K``: runs trained together as one batched model."""
    return typer.Option("auto", "--pack", help=PACK_HELP)
