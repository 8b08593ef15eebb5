"""Analysis step of the mamba-cost study: per-token decoding time and decoding-state size against
the context length, for each run's last checkpoint, with their log-log slopes.

Writes ``cost.json`` (every run's rows and slopes, and per family the median over its runs) and
``cost.png`` (three log-log panels: ms per token, state bytes, GPT / Mamba ratios) into the study
folder. The measured lengths are ``LENGTHS[preset]`` (a preset is a RunConfig, which has no room
for them).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from reasonlab.bench.decode_cost import decode_cost, fit_slope
from reasonlab.config import RunConfig
from reasonlab.core.files import write_json
from reasonlab.models.base import LanguageModel
from reasonlab.reporting.content import Claim, Figure, Item, Paragraph, Section, Table
from reasonlab.reporting.plots import TITLE_SIZE, save_png, wrap_title
from reasonlab.runs.folder import RunDir
from reasonlab.runs.summary import StudyResult
from reasonlab.studies.verdicts import verdict_from_seeds
from reasonlab.training.loop import resolve_device

LENGTHS = {
    "cpu": [64, 128, 256, 512, 1024, 2048, 4096],
    "paper": [256, 512, 1024, 2048, 4096, 8192, 16384],
}
NEW_TOKENS = 16
REPEATS = 5
LABELS = {"gpt": "GPT", "mamba": "Mamba"}
COLOURS = {"gpt": "tab:blue", "mamba": "tab:orange"}


def _label(family: str) -> str:
    return LABELS.get(family, family)


def _fmt_slope(value: float | None) -> str:
    """Two decimals, '–' for no slope; a flat -1e-17 shows as 0.00, not -0.00."""
    return "–" if value is None else f"{round(value, 2) + 0.0:.2f}"


def _reachable(model: LanguageModel, lengths: list[int]) -> list[int]:
    """The lengths after which the model can decode NEW_TOKENS (a GPT stops at max_seq_len)."""
    limit = getattr(model.cfg, "max_seq_len", None)  # a Mamba has no position limit
    return [length for length in lengths if limit is None or length + NEW_TOKENS <= limit]


def _slopes(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Log-log slopes of time and state bytes over all lengths, and of time over the longest
    half of the lengths (where fixed per-step overheads matter least); None below two points."""

    def slope(part: list[dict[str, Any]], key: str) -> float | None:
        if len(part) < 2:
            return None
        return fit_slope([r["length"] for r in part], [r[key] for r in part])

    return {
        "ms_per_token": slope(rows, "ms_per_token"),
        "ms_per_token_long": slope(rows[len(rows) // 2 :], "ms_per_token"),
        "state_bytes": slope(rows, "state_bytes"),
    }


def _measure_run(run_dir: Path, lengths: list[int]) -> dict[str, Any]:
    run = RunDir(run_dir)
    config: RunConfig = run.load_config()
    model = run.load_model(config=config)
    device = resolve_device(config.train.device)
    reachable = _reachable(model, lengths)
    rows = decode_cost(model, reachable, new_tokens=NEW_TOKENS, repeats=REPEATS, device=device)
    return {
        "family": model.family,
        "model": model.describe(),
        "parameters": model.num_parameters(),
        "device": str(device),
        "skipped_lengths": [length for length in lengths if length not in reachable],
        "rows": rows,
        "slopes": _slopes(rows),
    }


def _median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per length, the median over runs of every measured value."""
    by_length: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        for row in run["rows"]:
            by_length.setdefault(row["length"], []).append(row)
    return [
        {
            "length": length,
            **{
                key: statistics.median(row[key] for row in rows)
                for key in rows[0]
                if key != "length"
            },
        }
        for length, rows in sorted(by_length.items())
    ]


def _families(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Family -> its runs' names, the median rows over them, and their slopes."""
    names: dict[str, list[str]] = {}
    for name, run in runs.items():
        names.setdefault(run["family"], []).append(name)
    families = {}
    for family, members in names.items():
        rows = _median_rows([runs[name] for name in members])
        families[family] = {"runs": members, "rows": rows, "slopes": _slopes(rows)}
    return families


def _ratio_series(families: dict[str, dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Lengths both the GPT and the Mamba reached, and GPT / Mamba of ``key`` at each."""
    gpt = {r["length"]: r[key] for r in families["gpt"]["rows"]}
    mamba = {r["length"]: r[key] for r in families["mamba"]["rows"]}
    lengths = sorted(gpt.keys() & mamba.keys())
    return lengths, [gpt[length] / mamba[length] for length in lengths]


def _plot(families: dict[str, dict[str, Any]], title: str, path: Path) -> None:
    """Three log-log panels against the context length, one line per family."""
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.8))
    panels = [("ms_per_token", "ms per decoded token"), ("state_bytes", "decoding state (bytes)")]
    panel_titles = ["time per decoded token", "decoding state after the prompt", "GPT / Mamba"]
    for axis, panel_title in zip(axes, panel_titles, strict=True):
        axis.set_title(panel_title, fontsize=TITLE_SIZE)
    for axis, (key, ylabel) in zip(axes, panels, strict=False):
        for family, entry in families.items():
            lengths = [r["length"] for r in entry["rows"]]
            values = [r[key] for r in entry["rows"]]
            slope = entry["slopes"][key]
            label = f"{_label(family)} (slope {_fmt_slope(slope)})"
            axis.loglog(lengths, values, marker="o", color=COLOURS.get(family), label=label)
        axis.set_ylabel(ylabel, fontsize=8)
    ratio = axes[2]
    if {"gpt", "mamba"} <= families.keys():
        for key, label in (("ms_per_token", "time per token"), ("state_bytes", "state bytes")):
            ratio.loglog(*_ratio_series(families, key), marker="o", label=label)
        ratio.axhline(1.0, color="black", lw=0.8, ls="--")
    ratio.set_ylabel("GPT / Mamba", fontsize=8)
    for axis in axes:
        axis.set_xlabel("context length (tokens)", fontsize=8)
        axis.tick_params(which="both", labelsize=7)
        axis.grid(alpha=0.3, which="both")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    fig.suptitle(wrap_title(title, 12.0), fontsize=TITLE_SIZE)
    save_png(fig, path)


def _cost_table(families: dict[str, dict[str, Any]]) -> Table:
    """length | ms/token per family | state bytes per family | peak MiB per family (CUDA only)."""
    values = {family: {r["length"]: r for r in entry["rows"]} for family, entry in families.items()}
    keys = [("ms_per_token", "ms/token"), ("state_bytes", "state bytes")]
    if any("peak_extra_mib" in r for entry in families.values() for r in entry["rows"]):
        keys.append(("peak_extra_mib", "peak extra MiB"))
    header = ["length"] + [f"{_label(f)} {title}" for _, title in keys for f in families]
    lengths = sorted({length for by_length in values.values() for length in by_length})
    rows = [
        [length] + [values[f].get(length, {}).get(key) for key, _ in keys for f in families]
        for length in lengths
    ]
    return Table(header, rows)


def _slope_sentence(families: dict[str, dict[str, Any]]) -> str:
    parts = []
    for family, entry in families.items():
        slopes = {key: _fmt_slope(value) for key, value in entry["slopes"].items()}
        parts.append(
            f"{_label(family)}: time per token slope {slopes['ms_per_token']} over all lengths "
            f"({slopes['ms_per_token_long']} over the longest half), state bytes slope "
            f"{slopes['state_bytes']}"
        )
    return (
        "Fitted log-log slopes (value ~ length^slope; 1 = linear growth, 0 = flat): "
        + "; ".join(parts)
        + "."
    )


SLOPE_GAP = 0.5  # how much steeper the GPT's state must grow (log-log slope) than Mamba's


def _claim(runs: dict[str, dict[str, Any]]) -> Claim:
    """The cost claim, decided over the runs (seeds) of each family by the rule over seeds on
    the state-bytes slope: the GPT's (its KV cache, ~1: linear) at least SLOPE_GAP above the
    Mamba's (~0: constant). The state is what each decoded token reads, so its growth is the
    per-token cost's; the timed slopes are stated beside it (on a CPU at these lengths fixed
    per-step overheads flatten them)."""
    slopes: dict[str, list[float | None]] = {}
    time_slopes: dict[str, list[float | None]] = {}
    for run in runs.values():
        slopes.setdefault(run["family"], []).append(run["slopes"]["state_bytes"])
        time_slopes.setdefault(run["family"], []).append(run["slopes"]["ms_per_token_long"])
    gpt = [s for s in slopes.get("gpt", []) if s is not None]
    mamba = [s for s in slopes.get("mamba", []) if s is not None]
    verdict, why = verdict_from_seeds(gpt, mamba, SLOPE_GAP)

    def listed(values: list[float | None]) -> str:
        return ", ".join(_fmt_slope(v) for v in values)

    return Claim(
        "A Transformer's decoding state (its KV cache, read at every token) grows with the "
        f"context while Mamba's stays constant: {verdict}{why} here - state-bytes log-log "
        f"slope per seed, GPT {listed(slopes.get('gpt', []))}, Mamba "
        f"{listed(slopes.get('mamba', []))} (rule: the GPT's at least {SLOPE_GAP:g} above the "
        "Mamba's in every seed and on the means); time per token slope over the longest half, "
        f"GPT {listed(time_slopes.get('gpt', []))}, Mamba "
        f"{listed(time_slopes.get('mamba', []))}.",
        verdict,
        "cost",
        {f"{family} state slope": values for family, values in slopes.items()}
        | {f"{family} time slope": values for family, values in time_slopes.items()},
    )


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    lengths = LENGTHS[result.preset]
    runs = {}
    for name in result.runs:
        print(f"[mamba-cost] measuring {name} at {len(lengths)} lengths", flush=True)
        runs[name] = _measure_run(out / "runs" / name, lengths)
    families = _families(runs)
    analysis = {
        "lengths": lengths,
        "new_tokens": NEW_TOKENS,
        "repeats": REPEATS,
        "runs": runs,
        "families": families,
    }
    write_json(out / "cost.json", analysis)
    _plot(families, f"mamba-cost ({result.preset}): decoding cost vs context", out / "cost.png")
    skipped = [
        Paragraph(f"{name} skips lengths {run['skipped_lengths']} (beyond model.max_seq_len)")
        for name, run in runs.items()
        if run["skipped_lengths"]
    ]
    run_rows = [
        [name, run["model"], f"{run['parameters']:,}", run["device"]] for name, run in runs.items()
    ]
    section = Section(
        "Decoding cost against context length",
        f"For each run's last checkpoint: a random prompt of T tokens fed into a fresh "
        f"decoding state (not timed), then {NEW_TOKENS} single-token steps timed; the median "
        f"over {REPEATS} prompts of the mean time per token, batch 1. State bytes: the sum of "
        "the tensors the decoding state holds after the prompt (the GPT's keys and values per "
        "layer, the Mamba's conv inputs and SSM state per layer). Several seeds of a family are "
        "combined by their median.",
        [
            Figure(out / "cost.png", "decoding cost", "Log-log against the length."),
            Paragraph(_slope_sentence(families)),
            _claim(runs),
            *skipped,
            _cost_table(families),
            Table(["run", "model", "parameters", "measured on"], run_rows),
        ],
    )
    return analysis, [section]
