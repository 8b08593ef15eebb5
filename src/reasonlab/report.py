"""Plots and the self-contained HTML report of a study (images embedded, no network needed)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from reasonlab.io import atomic_path
from reasonlab.runs import RunDir

STAGE_SUFFIXES = (".bridge", ".tail", ".tail_given_true_bridge")


def variant_of(run_name: str) -> str:
    """'cot-interleaved-s1' -> 'cot-interleaved' (runs of one variant share a colour)."""
    head, _, seed = run_name.rpartition("-s")
    return head if head and seed.isdigit() else run_name


def plot_curves(
    histories: dict[str, list[dict[str, Any]]],
    keys: list[str],
    title: str,
    path: Path | None = None,
    threshold: float | None = None,
) -> bytes:
    """One panel per metric key, accuracy vs step, one line per run; returns PNG bytes."""
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.1 * rows), squeeze=False)
    variants = sorted({variant_of(name) for name in histories})
    colours = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    for axis, key in zip(axes.flat, keys, strict=False):
        labelled: set[str] = set()
        for run_name, records in histories.items():
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if not points:
                continue
            variant = variant_of(run_name)
            steps, values = zip(*points, strict=True)
            axis.plot(
                steps,
                values,
                color=colours[variant],
                lw=1.6,
                alpha=0.9,
                label=variant if variant not in labelled else None,
            )
            labelled.add(variant)
        if threshold is not None:
            axis.axhline(threshold, color="grey", lw=0.8, ls=":")
        axis.set_title(key, fontsize=10)
        axis.set_ylim(-0.03, 1.03)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    axes.flat[0].set_ylabel("exact-match accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    png = buffer.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
    return png


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="wide">{table_html}</div>'  # wide tables scroll, not the page


def _describe(config: dict[str, Any]) -> str:
    task, model, train = config["task"], config["model"], config["train"]
    task_text = ", ".join(f"{k} {v}" for k, v in task.items() if k not in ("seed", "data_dir"))
    return (
        f"task: {task_text}. model: {model['kind']} {model['n_layers']} layers x "
        f"{model['d_model']}, {model['n_heads']} heads, {model['positions']} positions. "
        f"train: {train['steps']} steps, batch {train['batch_size']}, lr {train['lr']}, "
        f"weight decay {train['weight_decay']}, warm-up {train['warmup_steps']}, "
        f"{train['schedule']} schedule."
    )


def write_study_report(
    folder: Path, spec: Any, result: dict[str, Any], sections: list[str] | None = None
) -> Path:
    folder = Path(folder)
    histories = {name: RunDir(folder / "runs" / name).read_metrics() for name in result["runs"]}
    keys: list[str] = []
    for records in histories.values():
        for record in records:
            keys += [
                k
                for k in record
                if k not in keys
                and isinstance(record[k], float)
                and k not in ("loss", "lr", "elapsed_s")
            ]
    probes = [k for k in keys if "." not in k]
    stage_keys = [
        k
        for k in keys
        if k.endswith(STAGE_SUFFIXES)
        and k.split(".")[0] in ("test_inferred_iid", "test_inferred_ood")
    ]
    threshold = next(iter(result["runs"].values()))["config"]["eval"]["threshold"]
    curves = plot_curves(
        histories,
        probes,
        f"{spec.name} ({result['preset']}): accuracy vs step",
        folder / "curves.png",
        threshold,
    )
    stages = (
        plot_curves(
            histories,
            stage_keys,
            "per CoT stage (generated bridge; tail after "
            "the model's bridge; tail given the true bridge)",
            folder / "stages.png",
            threshold,
        )
        if stage_keys
        else None
    )

    headline = spec.headline or {k: k for k in probes[:2]}
    header = [
        "run",
        *(f"final {label}" for label in headline),
        *(f"steps to {threshold:g} ({label})" for label in headline),
        "wall s",
        "status",
    ]
    rows = []
    for name, run in result["runs"].items():
        rows.append(
            [
                name,
                *(run["final"].get(k) for k in headline.values()),
                *(run["steps_to_threshold"].get(k) for k in headline.values()),
                None if run.get("wall_s") is None else round(run["wall_s"], 1),
                run.get("status"),
            ]
        )
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name, run in result["runs"].items():
        by_variant[variant_of(name)].append(run)
    mean_rows = []
    for variant, runs in by_variant.items():
        means = [sum(r["final"].get(k) or 0.0 for r in runs) / len(runs) for k in headline.values()]
        mean_rows.append([variant, len(runs), *means])
    all_rows = [
        [name, *(run["final"].get(k) for k in probes)] for name, run in result["runs"].items()
    ]

    notes = sorted({note for run in result["runs"].values() for note in run.get("notes", [])})
    paper = spec.paper or {}
    paper_rows = [[r.get("setting"), r.get("id"), r.get("ood")] for r in paper.get("rows", [])]
    configs = {variant_of(n): run["config"] for n, run in result["runs"].items()}
    device = next(iter(result["runs"].values())).get("device", "?")

    parts = [
        f"<h1>{html.escape(spec.name)} — preset {html.escape(result['preset'])}</h1>",
        f"<p>{html.escape(spec.description)}. {len(result['runs'])} runs, "
        f"{result.get('seeds', 1)} seed(s) per variant, device {html.escape(str(device))}.</p>",
        "<h2>Accuracy over training</h2>",
        img(curves, "accuracy curves"),
        "<p>Exact match of the whole completion under greedy decoding; the dotted line is the "
        f"threshold {threshold:g}.</p>",
    ]
    if stages:
        parts += ["<h2>Per CoT stage</h2>", img(stages, "per-stage accuracy")]
    parts += [
        "<h2>Final accuracy and steps to threshold</h2>",
        table(header, rows),
        "<h3>Mean over seeds</h3>",
        table(["variant", "seeds", *headline], mean_rows),
        "<h3>Every probe, final</h3>",
        table(["run", *probes], all_rows),
    ]
    parts += sections or []
    if paper_rows:
        parts += [
            "<h2>The paper's numbers</h2>",
            f"<p>{html.escape(paper.get('source', ''))}. Paper scale, not this preset's.</p>",
            table(["setting", "ID", "OOD"], paper_rows),
        ]
    if paper.get("circuit"):
        items = "".join(f"<li>{html.escape(line)}</li>" for line in paper["circuit"])
        parts += [
            "<h2>The paper's description of the circuit</h2>",
            f"<p>{html.escape(paper.get('source', ''))}.</p><ul>{items}</ul>",
        ]
    if notes:
        parts += [
            "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
        ]
    parts += [
        "<h2>Configurations</h2><ul>"
        + "".join(
            f"<li><b>{html.escape(v)}</b>: {html.escape(_describe(c))}</li>"
            for v, c in configs.items()
        )
        + "</ul>"
    ]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}.wide{overflow-x:auto;max-width:100%}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(spec.name)}"
        f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = folder / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path
