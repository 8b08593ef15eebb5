"""Analysis step of the icl-variants study: each attention variant against softmax attention,
per hyperparameter setting, over seeds; the best setting of each variant and the best overall.

A variant "beats" softmax when its mean error is lower by more than twice the standard error of
the difference of the two means (Welch; with one seed per side no spread is known and the
verdict is "undecided"); "is worse" in the mirror case; otherwise "no difference resolved".
Scores: the final error averaged over every prompt position (``test``) and the error after 2d
examples (``test.k<2d>``), lower is better.

The baseline variant is the study's ``roles.baseline`` (icl_variants.yaml); a variant's kind is
its runs' ``model.attention``; runs are ``VARIANT-s{seed}``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.reporting.content import Bullets, Item, Section, Table
from reasonlab.reporting.seeds import spread, variant_of
from reasonlab.runs.summary import StudyResult


def _scores(result: StudyResult) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """variant -> metric -> per-seed final values, and the metric keys (test, test.k<2d>)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    keys = ["test"]
    for name, run in result.runs.items():
        dim = run.config["task"]["dim"]
        keys = ["test", f"test.k{2 * dim}"]
        for key in keys:
            value = run.final.get(key)
            if value is not None:
                values[variant_of(name)][key].append(float(value))
    return values, keys


def compare(variant: list[float], baseline: list[float]) -> tuple[str, float | None]:
    """The verdict of a variant's errors against the baseline's, and the difference of means."""
    if not variant or not baseline:
        return "undecided (a run is missing)", None
    difference = float(np.mean(variant) - np.mean(baseline))
    if len(variant) < 2 or len(baseline) < 2:
        return "undecided (one seed)", difference
    error = math.sqrt(
        np.var(variant, ddof=1) / len(variant) + np.var(baseline, ddof=1) / len(baseline)
    )
    if difference < -2 * error:
        return "beats softmax", difference
    if difference > 2 * error:
        return "is worse than softmax", difference
    return "no difference resolved", difference


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    from reasonlab.experiments.study_spec import STUDIES

    values, keys = _scores(result)
    baseline_variant = STUDIES[result.study].roles["baseline"]
    kinds = {
        variant_of(name): run.config["model"]["attention"] for name, run in result.runs.items()
    }
    baseline = values.get(baseline_variant, {})
    rows, verdicts = [], {}
    for variant, metrics in values.items():
        verdict, difference = (
            ("baseline", None)
            if variant == baseline_variant
            else compare(metrics[keys[-1]], baseline.get(keys[-1], []))
        )
        verdicts[variant] = {"verdict": verdict, "difference": difference}
        rows.append(
            [
                variant,
                len(metrics[keys[0]]),
                *(spread(metrics[key]) for key in keys),
                None if difference is None else f"{difference:+.4f}",
                verdict,
            ]
        )
    best_per_kind: dict[str, str] = {}
    for variant, metrics in values.items():
        kind = kinds[variant]
        mean = float(np.mean(metrics[keys[-1]])) if metrics[keys[-1]] else math.inf
        current = best_per_kind.get(kind)
        if current is None or mean < float(np.mean(values[current][keys[-1]] or [math.inf])):
            best_per_kind[kind] = variant
    best = min(
        best_per_kind.values(), key=lambda v: float(np.mean(values[v][keys[-1]] or [math.inf]))
    )
    lines = [
        f"{kind}: best setting {variant} ({verdicts[variant]['verdict']}"
        + (
            ""
            if verdicts[variant]["difference"] is None
            else f", {verdicts[variant]['difference']:+.4f} in error after 2d examples"
        )
        + ")"
        for kind, variant in best_per_kind.items()
    ]
    lines.append(f"best overall: {best}")
    items: list[Item] = [
        Section(
            "Each variant against softmax attention",
            "Final squared error (divided by d) averaged over every prompt position, and after 2d "
            "examples: mean ± sample standard deviation over seeds (lowest–highest). The "
            "difference is the variant's mean minus softmax's after 2d examples; a variant beats "
            "softmax when it is lower by more than twice the standard error of that difference.",
            [Table(["variant", "seeds", *keys, "difference", "verdict"], rows)],
        ),
        Section("Best settings", items=[Bullets(lines)]),
    ]
    analysis = {
        "metric": keys[-1],
        "verdicts": verdicts,
        "best_per_kind": best_per_kind,
        "best": best,
        "claims": lines,
    }
    return analysis, items
