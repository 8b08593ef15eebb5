"""Analysis step of the studies whose claim is a curve over a config knob (cot-noise, cot-lambda,
cot-pattern, cot-depth): the final headline accuracies and the steps to the threshold against
the knob, one line per series, mean over seeds with the lowest-to-highest seed as a band, and
the paper's points where its rows name the knob's value.

A study lists its curves in its YAML::

    curves:
      - {x: task.noise_ratio, series: task.noise_kind, label: "noise ratio xi"}
      - {x: task.num_entities, series: task.cot, where: {model.d_model: 128}, log_x: true}

``x`` and ``series`` are dotted config keys; ``where`` keeps the runs whose config has those
values, and ``base: [keys]`` those whose config has the preset's value (after ``--set``) at each
key: one scale axis among several (cot-pattern). A paper row that names ``x`` (and ``series``, if
any) as keys is drawn as a point beside ours.
"""

from __future__ import annotations

import copy
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from reasonlab.config import apply_overrides
from reasonlab.core.files import atomic_path
from reasonlab.reporting.backend import use_file_backend
from reasonlab.reporting.content import Figure, Item, Paragraph, Section, Table
from reasonlab.reporting.seeds import mean_present, spread
from reasonlab.runs.summary import StudyResult, StudyRun

use_file_backend()  # Agg, unless a notebook or MPLBACKEND chose another

Point = dict[str, Any]


def config_value(config: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of a run's config (as in its summary), or None."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _matches(config: dict[str, Any], where: dict[str, Any]) -> bool:
    return all(config_value(config, key) == value for key, value in where.items())


def curve_points(
    curve: dict[str, Any], runs: dict[str, StudyRun], headline: dict[str, str]
) -> list[Point]:
    """One point per (series, x) over the completed runs that match ``curve['where']``: the
    final value of every headline probe and the steps to the threshold of each, per seed."""
    cells: dict[tuple[Any, Any], list[StudyRun]] = defaultdict(list)
    for run in runs.values():
        config = run.config
        if run.status != "completed" or not _matches(config, curve.get("where") or {}):
            continue
        series = config_value(config, curve["series"]) if curve.get("series") else ""
        cells[(series, config_value(config, curve["x"]))].append(run)
    points = []
    for (series, x), members in sorted(
        cells.items(), key=lambda item: (str(item[0][0]), item[0][1])
    ):
        point: Point = {"series": series, "x": x, "seeds": len(members)}
        for label, probe in headline.items():
            point[label] = [r.final.get(probe) for r in members]
            point[f"steps {label}"] = [r.steps_to_threshold.get(probe) for r in members]
        points.append(point)
    return points


def paper_points(curve: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper rows that name this curve's knob (and series), in its ``where``'s setting."""
    keys = [curve["x"]] + ([curve["series"]] if curve.get("series") else [])
    where = {k: v for k, v in (curve.get("where") or {}).items() if any(k in r for r in rows)}
    return [r for r in rows if all(k in r for k in keys) and _matches_flat(r, where)]


def paper_key(label: str) -> str:
    """The paper rows' column for a headline label: its first word, lower-cased ('ID two-hop'
    -> 'id', 'OOD two-hop' -> 'ood'), as the two-hop studies' rows name them."""
    return label.split()[0].lower()


def _matches_flat(row: dict[str, Any], where: dict[str, Any]) -> bool:
    return all(row.get(key, value) == value for key, value in where.items())


def plot_curve(
    curve: dict[str, Any],
    points: list[Point],
    paper: list[dict[str, Any]],
    headline: dict[str, str],
    threshold: float,
) -> bytes:
    """Panels: each headline accuracy against the knob, then the steps to the threshold of the
    last headline probe; a line per series (mean over seeds, band = lowest to highest seed),
    the paper's points as crosses."""
    labels = list(headline)
    panels = [*labels, f"steps {labels[-1]}"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
    series_names = sorted({p["series"] for p in points}, key=str)
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(series_names)}
    for axis, panel in zip(axes.flat, panels, strict=True):
        for series in series_names:
            mine = [p for p in points if p["series"] == series]
            xs, means, lows, highs = [], [], [], []
            for p in mine:
                present = [float(v) for v in p[panel] if v is not None]
                if present:
                    xs.append(p["x"])
                    means.append(np.mean(present))
                    lows.append(min(present))
                    highs.append(max(present))
            if not xs:
                continue
            name = str(series) or "ours"
            axis.plot(xs, means, "o-", color=colours[series], lw=1.6, ms=4, label=name)
            axis.fill_between(xs, lows, highs, color=colours[series], alpha=0.2, lw=0)
        if not panel.startswith("steps "):
            probe_key = paper_key(panel)
            for series in series_names or [""]:
                rows = [r for r in paper if not curve.get("series") or r[curve["series"]] == series]
                xs = [r[curve["x"]] for r in rows if r.get(probe_key) is not None]
                ys = [r[probe_key] for r in rows if r.get(probe_key) is not None]
                if xs:
                    colour = colours.get(series, "black")
                    axis.plot(xs, ys, "x--", color=colour, lw=0.8, ms=7, label=f"paper {series}")
            axis.set_ylim(-0.03, 1.03)
            axis.axhline(threshold, color="grey", lw=0.8, ls=":")
            axis.set_ylabel("final exact-match accuracy")
        else:
            axis.set_ylabel(f"steps to {threshold:g} (seeds that reached it)", fontsize=9)
            if not axis.has_data():
                axis.text(
                    0.5,
                    0.5,
                    f"no run reached {threshold:g}",
                    ha="center",
                    transform=axis.transAxes,
                    color="grey",
                )
        if curve.get("log_x"):
            axis.set_xscale("log")
        ticks = sorted({p["x"] for p in points} | {r[curve["x"]] for r in paper})
        if len(ticks) <= 8:  # the knob's own values, written plainly
            axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
            axis.minorticks_off()
        axis.set_title(panel, fontsize=10)
        axis.set_xlabel(curve.get("label", curve["x"]))
        axis.grid(alpha=0.3)
    handles, names = [], []
    for axis in axes.flat:  # one legend for the figure: every series and paper line once
        for handle, name in zip(*axis.get_legend_handles_labels(), strict=True):
            if name not in names:
                handles.append(handle)
                names.append(name)
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), frameon=False)
    rows_of_legend = -(-len(names) // 5) if names else 0
    fig.tight_layout(rect=(0, 0.03 + 0.09 * rows_of_legend, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def curve_table(points: list[Point], paper: list[dict[str, Any]], curve: dict[str, Any]) -> Table:
    labels = [k for k in points[0] if k not in ("series", "x", "seeds")] if points else []
    finals = [k for k in labels if not k.startswith("steps ")]
    header = ["series", curve.get("label", curve["x"]), "seeds"]
    header += [f"final {k}" for k in finals] + [f"{k} (reached)" for k in labels if k not in finals]
    header += [f"paper {k.split()[0]}" for k in finals]  # "paper ID", "paper OOD"
    rows = []
    for p in points:
        match = [
            r
            for r in paper
            if r[curve["x"]] == p["x"]
            and (not curve.get("series") or r[curve["series"]] == p["series"])
        ]
        paper_values = [match[0].get(paper_key(k)) if match else None for k in finals]
        rows.append(
            [
                p["series"],
                p["x"],
                p["seeds"],
                *(spread(p[k]) for k in finals),
                *(spread(p[k], 0, "reached") for k in labels if k not in finals),
                *paper_values,
            ]
        )
    return Table(header, rows)


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    from reasonlab.experiments.study_spec import STUDIES

    spec = STUDIES[result.study]
    preset = apply_overrides(copy.deepcopy(spec.presets[result.preset]), result.overrides)
    runs = result.runs
    threshold = float(next(iter(runs.values())).config["eval"]["threshold"]) if runs else 0.95
    rows = spec.paper.get("rows", [])
    analysis: dict[str, Any] = {"curves": []}
    curves: list[Item] = []
    for index, curve in enumerate(spec.curves):
        base = {key: config_value(preset, key) for key in curve.get("base", [])}
        curve = {**curve, "where": {**(curve.get("where") or {}), **base}}
        points = curve_points(curve, runs, spec.headline)
        paper = paper_points(curve, rows)
        label = curve.get("label", curve["x"])
        where = ", ".join(f"{k} = {v}" for k, v in (curve.get("where") or {}).items())
        analysis["curves"].append(
            {
                "x": curve["x"],
                "series": curve.get("series"),
                "where": curve.get("where") or {},
                "points": [
                    {
                        **{k: p[k] for k in ("series", "x", "seeds")},
                        **{k: mean_present(v) for k, v in p.items() if isinstance(v, list)},
                        "per_seed": {k: v for k, v in p.items() if isinstance(v, list)},
                    }
                    for p in points
                ],
            }
        )
        if not points:
            curves.append(Paragraph(f"{label}: no completed run to plot."))
            continue
        png = plot_curve(curve, points, paper, spec.headline, threshold)
        name = f"curve-{index}-{curve['x'].split('.')[-1]}.png"
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(png)
        caption = (
            f"Final accuracy and steps to {threshold:g} against {label}"
            + (f" ({where})" if where else "")
            + "; mean over seeds, the band spans the lowest to the highest seed"
            + ("; crosses: the paper's numbers, at its own scale." if paper else ".")
        )
        curves.append(
            Section(
                label + (f" ({where})" if where else ""),
                items=[
                    Figure(png, f"accuracy against {label}", caption),
                    curve_table(points, paper, curve),
                ],
            )
        )
    return analysis, [Section("Final accuracy against the knob", items=curves)]
