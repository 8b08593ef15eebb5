"""Analysis step of the cot-circuit study: stage 1 by the logit lens, stage 2 by causal tracing.

Stage 1: at the last question position, the first layer at which at least half of the queries
rank the bridge first (layer 0 = embeddings), for ID and OOD queries, over checkpoints.
Stage 2 (CoT runs): patch the residual stream of one position at one layer from a counterfactual
that changes h, r1, r2 or only the written bridge, and read whether the clean tail survives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasonlab.analysis.runs import TwoHopRun, run_logit_lens, run_trace
from reasonlab.reporting.content import Figure, Item, Section, Table
from reasonlab.runs.summary import StudyResult

PROBES = {"ID": "test_inferred_iid", "OOD": "test_inferred_ood"}
QUERIES = 300


def _heatmap(analysis: dict[str, Any]) -> str:
    """The heatmap written for the last checkpoint of an analysis, relative to the run folder."""
    step = analysis["checkpoints"][-1]["step"]
    path = next(Path(f) for f in analysis["files"] if f.endswith(f"-step{step}.png"))
    return str(path.relative_to(analysis["run"]))


def _stage1(subject: TwoHopRun) -> dict[str, Any]:
    out = {}
    for label, probe in PROBES.items():
        lens = run_logit_lens(subject, probe, "bridge", "all", QUERIES)
        last = lens["checkpoints"][-1]
        layer = last["first_top1_layer"]
        out[label] = {
            "probe": probe,
            "position": lens["positions"][lens["read_position"]],
            "first_top1_layer": None if layer is None else lens["layers"][layer],
            "top1_by_layer": [round(v, 3) for v in last["top1_at_read"]],
            "mrr_by_layer": [round(v, 3) for v in last["mrr_at_read"]],
            "over_training": {
                c["step"]: (
                    None if c["first_top1_layer"] is None else lens["layers"][c["first_top1_layer"]]
                )
                for c in lens["checkpoints"]
            },
            "layers": lens["layers"],
            "heatmap": _heatmap(lens),
        }
    return out


def _stage2(subject: TwoHopRun, cot: str) -> dict[str, Any]:
    changes = ["head", "r1", "r2"] + (["bridge"] if cot != "none" else [])
    out: dict[str, Any] = {}
    for label, probe in PROBES.items():
        out[label] = {}
        for change in changes:
            trace = run_trace(subject, probe, change, "tail", "resid", "last", QUERIES)
            last = trace["checkpoints"][-1]
            grid = last["top1"]
            per_position = {}
            for j, name in enumerate(trace["positions"]):
                column = [row[j] for row in grid if row[j] is not None]
                per_position[name] = {"min": min(column), "max": max(column)}
            out[label][change] = {
                "queries": trace["queries"],
                "clean_top1": last["clean_top1"],
                "positions": trace["positions"],
                "layers": trace["layers"],
                "top1": grid,
                "per_position": per_position,
                "heatmap": _heatmap(trace),
            }
    return out


def _verdicts(stage2: dict[str, Any]) -> dict[str, Any]:
    """Does patching the bridge position break the tail at every layer, and h / r1 never?"""
    verdicts = {}
    for label, changes in stage2.items():
        if "bridge" not in changes:
            continue
        bridge = changes["bridge"]["per_position"].get("b")
        head = changes["head"]["per_position"]
        r1 = changes["r1"]["per_position"]
        verdicts[label] = {
            "bridge_position_breaks_at_every_layer": bridge is not None and bridge["max"] <= 0.5,
            "bridge_position_max_surviving": None if bridge is None else bridge["max"],
            "h_position_never_breaks": head["h"]["min"] >= 0.5,
            "h_position_min_surviving": head["h"]["min"],
            "r1_position_never_breaks": r1["r1"]["min"] >= 0.5,
            "r1_position_min_surviving": r1["r1"]["min"],
        }
    return verdicts


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    analysis: dict[str, Any] = {}
    stage1_rows: list[list[Any]] = []
    stage2_rows: list[list[Any]] = []
    heatmaps: list[Item] = []
    for name, run in result.runs.items():
        run_dir = out / "runs" / name
        cot = run.config["task"]["cot"]
        print(f"[cot-circuit] analyzing {name}", flush=True)
        subject = TwoHopRun(run_dir)  # the task rebuilt once for all the run's analyses
        stage1 = _stage1(subject)
        stage2 = _stage2(subject, cot)
        analysis[name] = {
            "cot": cot,
            "stage1": stage1,
            "stage2": stage2,
            "verdicts": _verdicts(stage2),
        }
        for label, s1 in stage1.items():
            stage1_rows.append(
                [
                    name,
                    label,
                    run.final.get(s1["probe"]),
                    s1["position"],
                    s1["first_top1_layer"] or "never",
                    " ".join(f"{v:.2f}" for v in s1["top1_by_layer"]),
                ]
            )
        for label, changes in stage2.items():
            for change, trace in changes.items():
                cells = [
                    f"{p} {v['min']:.2f}-{v['max']:.2f}" for p, v in trace["per_position"].items()
                ]
                stage2_rows.append([name, label, change, trace["queries"], " | ".join(cells)])
        figures = [
            Figure(
                run_dir / s1["heatmap"],
                f"logit lens {name} {label}",
                f"Logit lens, {label} queries: MRR of the bridge per layer and position.",
            )
            for label, s1 in stage1.items()
        ]
        if cot != "none":
            figures += [
                Figure(
                    run_dir / stage2["OOD"][change]["heatmap"],
                    f"trace {name} {change}",
                    f"Causal tracing, OOD queries, {change} changed: share still answering "
                    "the clean tail.",
                )
                for change in ("head", "r1", "bridge")
            ]
        heatmaps.append(Section(name, items=figures))
    verdict_rows = [
        [
            name,
            label,
            v["bridge_position_breaks_at_every_layer"],
            v["bridge_position_max_surviving"],
            v["h_position_never_breaks"],
            v["h_position_min_surviving"],
            v["r1_position_never_breaks"],
            v["r1_position_min_surviving"],
        ]
        for name, entry in analysis.items()
        for label, v in entry["verdicts"].items()
    ]
    items: list[Item] = [
        Section(
            "Stage 1: where the bridge is resolved (logit lens)",
            "The residual stream after each layer (embed = layer 0) read through the final layer "
            "norm and the unembedding, at the last question position; the layer listed is the "
            "first at which at least half of the queries rank the bridge first.",
            [
                Table(
                    [
                        "run",
                        "queries",
                        "two-hop accuracy",
                        "position",
                        "bridge top-1 from layer",
                        "top-1 share by layer",
                    ],
                    stage1_rows,
                )
            ],
        ),
        Section(
            "Stage 2: what the tail depends on (causal tracing)",
            "Residual stream of one position at one layer patched from a counterfactual query "
            "(changed h, r1, r2, or only the written bridge); cells give, per position, the range "
            "over layers of the share of queries still answering the clean tail.",
            [
                Table(
                    [
                        "run",
                        "queries",
                        "change",
                        "n",
                        "surviving share per position (min-max over layers)",
                    ],
                    stage2_rows,
                ),
                Section(
                    "Verdicts",
                    items=[
                        Table(
                            [
                                "run",
                                "queries",
                                "bridge position breaks at every layer",
                                "max surviving",
                                "h never breaks",
                                "min surviving",
                                "r1 never breaks",
                                "min surviving",
                            ],
                            verdict_rows,
                        )
                    ],
                ),
            ],
        ),
        Section("Heatmaps", items=heatmaps),
    ]
    return analysis, items
