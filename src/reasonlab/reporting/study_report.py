"""Plots and the self-contained HTML report of a study (images embedded, no network needed)."""

from __future__ import annotations

import base64
import html
import io
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from reasonlab.config import kind_section_from_dict
from reasonlab.core.files import atomic_path
from reasonlab.runs.folder import RunDir

STAGE_SUFFIXES = (".bridge", ".tail", ".tail_given_true_bridge")
# Measured with the cot-twohop cpu preset and model.positions=rotary (docs/RESULTS.md, section 1).
ROTARY_NOTE = (
    "with rotary positions (model.positions=rotary), which encode only the distance between "
    "tokens, the interleaved pattern h r1 b1 r2 b2 r3 t answers them in one pass: on the "
    "cot-twohop cpu preset with task.cot=interleaved, 0.957 of the OOD three-hop chains (22 of "
    "23) and 0.928 of the ID ones after 500 steps. The pattern h r1 r2 r3 b1 b2 t still scores "
    "0.000 with rotary positions: its first bridge is right (OOD 0.913) but the second must be "
    "looked up from r2 three tokens back, an arrangement two-hop training never shows."
)


def variant_of(run_name: str) -> str:
    """'cot-interleaved-s1' -> 'cot-interleaved' (runs of one variant share a colour)."""
    head, _, seed = run_name.rpartition("-s")
    return head if head and seed.isdigit() else run_name


def distinct_colours(names: list[str]) -> dict[str, Any]:
    """A colour per name, none repeated: tab10 up to 10 names, tab20 up to 20, else evenly
    spaced on a continuous map (cot-pattern has 28 variants)."""
    if len(names) <= 20:
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        return {name: cmap(i) for i, name in enumerate(names)}
    cmap = plt.get_cmap("turbo")
    return {name: cmap(i / (len(names) - 1)) for i, name in enumerate(names)}


def seed_curve(runs: list[list[dict[str, Any]]], key: str) -> tuple[list[int], np.ndarray]:
    """Steps at which every run of a variant has ``key``, and their values (runs, steps)."""
    by_run = [{r["step"]: r[key] for r in records if r.get(key) is not None} for records in runs]
    steps = sorted(set.intersection(*(set(values) for values in by_run))) if by_run else []
    return steps, np.array([[values[s] for s in steps] for values in by_run], dtype=float)


def plot_curves(
    histories: dict[str, list[dict[str, Any]]],
    keys: list[str],
    title: str,
    path: Path | None = None,
    threshold: float | None = None,
    metric: dict[str, Any] | None = None,
) -> bytes:
    """One panel per metric key, its value vs step, one colour per variant; returns PNG bytes.
    ``metric`` (a run summary's ``metric``: label, higher_is_better) labels the y axis; an
    accuracy (the default) is drawn on [0, 1], an error on a log scale.
    A variant with one seed is one line; with several, the line is the mean over seeds at the
    steps every seed reached and the shaded band spans their minimum to maximum."""
    accuracy = metric is None or metric.get("higher_is_better", True)
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.1 * rows), squeeze=False)
    variants = sorted({variant_of(name) for name in histories})
    colours = distinct_colours(variants)
    seeds: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for run_name, records in histories.items():
        seeds[variant_of(run_name)].append(records)
    for axis, key in zip(axes.flat, keys, strict=False):
        for variant in variants:
            steps, values = seed_curve(seeds[variant], key)
            if not steps:
                continue
            many = len(values) > 1
            label = f"{variant} (mean of {len(values)} seeds)" if many else variant
            axis.plot(steps, values.mean(0), color=colours[variant], lw=1.6, label=label)
            if many:
                axis.fill_between(
                    steps, values.min(0), values.max(0), color=colours[variant], alpha=0.2, lw=0
                )
        if threshold is not None:
            axis.axhline(threshold, color="grey", lw=0.8, ls=":")
        axis.set_title(key, fontsize=10)
        if accuracy:
            axis.set_ylim(-0.03, 1.03)
        elif axis.has_data():
            axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    axes.flat[0].set_ylabel(metric["label"] if metric else "exact-match accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        ncol = min(len(labels), 3 if any("mean of" in label for label in labels) else 5)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
        legend_in = 0.3 * -(-len(labels) // ncol)  # inches: one row of legend per ncol labels
    else:
        legend_in = 0.0
    fig.suptitle(title)
    fig.tight_layout(rect=(0, (0.05 + legend_in) / fig.get_size_inches()[1], 1, 0.96))
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


def figure(png: bytes, alt: str, caption: str) -> str:
    """An embedded image with its caption, in a box that keeps a margin from its neighbours."""
    return f"<figure>{img(png, alt)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def mean_present(values: list[float | None]) -> float | None:
    """The mean of the values that exist (runs without one left out), or None if none does."""
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def spread(values: list[float | None], digits: int = 3, counted: str = "with a value") -> str:
    """'mean ± std (min–max)' over the values that exist, and how many exist when some don't;
    one value is shown alone, none as '–'."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return f"– (0/{len(values)} {counted})" if len(values) > 1 else "–"
    array = np.array(present)
    text = f"{array[0]:.{digits}f}"
    if len(array) > 1:
        text = (
            f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f} "
            f"({array.min():.{digits}f}–{array.max():.{digits}f})"
        )
    if len(present) < len(values):
        text += f", {len(present)}/{len(values)} {counted}"
    return text


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="wide">{table_html}</div>'  # wide tables scroll, not the page


KHOP_PROBE = re.compile(r"^test_inferred_(\d+)hop_(iid|ood)$")


def khop_section(probes: list[str], runs: dict[str, dict[str, Any]]) -> list[str]:
    """What the k-hop probes measure, why they fail with learned positions, and their per-stage
    scores (each bridge, the tail), so that a row of zeros is not left unexplained."""
    from reasonlab.tasks.twohop.encoding import layout

    hops = sorted({int(m.group(1)) for p in probes if (m := KHOP_PROBE.match(p))})
    if not hops:
        return []
    names = ", ".join(f"test_inferred_{k}hop_iid / _ood" for k in hops)
    parts = [
        "<h2>The k-hop probes</h2>",
        f"<p>{html.escape(names)} ask a question of {' or '.join(map(str, hops))} hops "
        "(h r1 r2 r3 ...) that the model answers directly, in one pass, writing every bridge "
        "(with CoT) and the tail itself; training shows it one- and two-hop facts only. A "
        "query counts only when the whole completion is right.</p>",
    ]
    learned = {n: r for n, r in runs.items() if r["config"]["model"].get("positions") == "learned"}
    if learned:
        cots = sorted({r["config"]["task"]["cot"] for r in learned.values()})
        lengths = "; ".join(
            f"{cot}: {layout(hops[-1], cot).length} tokens against {layout(2, cot).length}"
            for cot in cots
        )
        parts.append(
            f"<p>With learned position embeddings ({len(learned)} of {len(runs)} runs here) "
            "they fail for a reason that is not reasoning: a k-hop sequence is longer than any "
            f"training sequence ({html.escape(lengths)}), so the last tokens of its completion "
            "are predicted at positions that were never trained. The "
            "paper (arXiv 2502.04667) does not ask them in one pass: it answers a three-hop "
            "question with two chained two-hop CoT queries, the second starting from the "
            "first one's answer, and reports 96% of 100 OOD three-hop chains right with a "
            "2-layer CoT model trained on two-hop facts only. reasonlab does not chain queries; "
            f"{ROTARY_NOTE}</p>"
        )
    header = ["run", "positions"]
    keys = []
    for k in hops:
        for split in ("iid", "ood"):
            probe = f"test_inferred_{k}hop_{split}"
            keys.append(probe)
            header.append(probe)
            bridges = ["bridge"] if k == 2 else [f"bridge{i + 1}" for i in range(k - 1)]
            stages = [f"{probe}.{stage}" for stage in (*bridges, "tail")]
            keys += stages
            header += [f"{split} {key.split('.')[1]}" for key in stages]
    rows = [
        [name, _positions(run["config"]["model"]), *(run["final"].get(key) for key in keys)]
        for name, run in runs.items()
    ]
    parts += [
        "<p>Final accuracy per k-hop probe and per stage (each generated bridge, then the "
        "tail after the model's own bridges):</p>",
        table(header, rows),
    ]
    return parts


PAPER_HEADERS = {"setting": "setting", "id": "ID", "ood": "OOD"}


def _paper_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns of a study's paper table: setting, id, ood (the two-hop studies), or every
    key its rows use, in order of first use."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns or ["setting", "id", "ood"]


def _positions(model: dict[str, Any]) -> str:
    """A run's position encoding (a Mamba has none: order comes from the recurrence)."""
    return model.get("positions", f"none ({model.get('kind')})")


def _describe(config: dict[str, Any]) -> str:
    task, model, train = config["task"], config["model"], config["train"]
    task_text = ", ".join(f"{k} {v}" for k, v in task.items() if k not in ("seed", "data_dir"))
    return (
        f"task: {task_text}. model: {kind_section_from_dict('model', model).describe()}. "
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
    first_run = next(iter(result["runs"].values()))
    threshold = first_run["config"]["eval"]["threshold"]
    metric = first_run.get("metric") or {"label": "exact-match accuracy", "higher_is_better": True}
    accuracy = metric.get("higher_is_better", True)
    measure = "accuracy" if accuracy else "error"
    curves = plot_curves(
        histories,
        probes,
        f"{spec.name} ({result['preset']}): {measure} vs step",
        folder / "curves.png",
        threshold,
        metric,
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
                None if run.get("wall_s") is None else f"{run['wall_s']:.1f}",
                run.get("status"),
            ]
        )
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name, run in result["runs"].items():
        by_variant[variant_of(name)].append(run)
    spread_rows = []
    for variant, runs in by_variant.items():
        spread_rows.append(
            [
                variant,
                len(runs),
                *(spread([r["final"].get(k) for r in runs]) for k in headline.values()),
                *(
                    spread([r["steps_to_threshold"].get(k) for r in runs], 0, "reached")
                    for k in headline.values()
                ),
            ]
        )
    all_rows = [
        [name, *(run["final"].get(k) for k in probes)] for name, run in result["runs"].items()
    ]

    notes = sorted({note for run in result["runs"].values() for note in run.get("notes", [])})
    paper = spec.paper or {}
    paper_columns = _paper_columns(paper.get("rows", []))
    paper_rows = [[r.get(column) for column in paper_columns] for r in paper.get("rows", [])]
    configs = {variant_of(n): run["config"] for n, run in result["runs"].items()}
    device = next(iter(result["runs"].values())).get("device", "?")

    parts = [
        f"<h1>{html.escape(spec.name)} — preset {html.escape(result['preset'])}</h1>",
        f"<p>{html.escape(spec.description)}. {len(result['runs'])} runs, "
        f"{result.get('seeds', 1)} seed(s) per variant, device {html.escape(str(device))}.</p>",
        f"<h2>{measure.capitalize()} over training</h2>",
        img(curves, f"{measure} curves"),
        "<p>"
        + (
            "Exact match of the whole completion under greedy decoding"
            if accuracy
            else f"{html.escape(metric['label'])}, lower is better (log scale)"
        )
        + f"; the dotted line is the threshold {threshold:g}. One colour per variant; with "
        "several seeds its line is the mean over seeds and the shaded band spans the lowest to "
        "the highest seed.</p>",
    ]
    if stages:
        parts += ["<h2>Per CoT stage</h2>", img(stages, "per-stage accuracy")]
    parts += [
        f"<h2>Final {measure} and steps to threshold</h2>",
        table(header, rows),
        "<h3>Over seeds</h3>",
        "<p>Per variant: mean ± sample standard deviation over its seeds (n − 1 in the "
        "denominator; none with one seed) and, in brackets, the lowest and highest seed. Runs "
        "without a value (never reached the threshold, or failed) are left out and counted.</p>",
        table(
            [
                "variant",
                "seeds",
                *(f"final {label}" for label in headline),
                *(f"steps to {threshold:g} ({label})" for label in headline),
            ],
            spread_rows,
        ),
        "<h3>Every probe, final</h3>",
        table(["run", *probes], all_rows),
        *khop_section(probes, result["runs"]),
    ]
    parts += sections or []
    if paper_rows:
        parts += [
            "<h2>The paper's numbers</h2>",
            f"<p>{html.escape(paper.get('source', ''))}. Paper scale, not this preset's.</p>",
            table([PAPER_HEADERS.get(c, c) for c in paper_columns], paper_rows),
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
        "figure{display:inline-block;vertical-align:top;margin:0 1.2em 1.2em 0;max-width:100%}"
        "figcaption{font-size:.85em;color:#555;max-width:32em}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(spec.name)}"
        f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = folder / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path
