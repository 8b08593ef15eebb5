"""Analysis step of the cot-twohop study: the paper's claim (arXiv 2502.04667) that CoT training
makes two-hop facts generalize out of distribution while the same model without CoT does not,
checked on the runs' final scores. It reads summary.json only: nothing is trained or scored
again.

The rule: every CoT variant's OOD two-hop accuracy, averaged over its seeds, is at least
``COT_LEVEL``, and the no-CoT variant's is at most ``NO_COT_CEILING``; a variant without a
completed run leaves the claim undecided.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from reasonlab.reporting.content import Claim, Item, Section
from reasonlab.reporting.seeds import variant_of
from reasonlab.runs.summary import StudyResult

PROBE = "test_inferred_ood"
COT_LEVEL = 0.9  # OOD generalization: the paper reports 0.953 at 8k steps, 0.978 at 20k
NO_COT_CEILING = 0.1  # no OOD generalization: the paper reports 0.0 even after grokking


def _means(result: StudyResult) -> tuple[dict[str, float | None], dict[str, str]]:
    """Per variant the mean final OOD accuracy over its completed runs (None: none completed),
    and its CoT pattern."""
    values: dict[str, list[float]] = defaultdict(list)
    cots: dict[str, str] = {}
    for name, run in result.runs.items():
        variant = variant_of(name)
        cots[variant] = str(run.config.get("task", {}).get("cot", "none"))
        values.setdefault(variant, [])
        score = run.final.get(PROBE)
        if run.status == "completed" and score is not None:
            values[variant].append(score)
    means = {v: (sum(s) / len(s) if s else None) for v, s in values.items()}
    return means, cots


def claim(result: StudyResult) -> Claim:
    """The paper's claim with its verdict (module docstring)."""
    means, cots = _means(result)
    missing = [v for v, m in means.items() if m is None]
    scores = {v: m for v, m in means.items() if m is not None}
    with_cot = [m for v, m in scores.items() if cots[v] != "none"]
    without = [m for v, m in scores.items() if cots[v] == "none"]
    if missing or not with_cot or not without:
        reason = (
            f"no completed run of {', '.join(missing)}"
            if missing
            else "it needs a variant with CoT and one without"
        )
        return Claim(
            f"CoT generalizes OOD, no CoT does not: undecided ({reason}).", "undecided", "ood"
        )
    shown = "; ".join(f"{v} {m:.3f}" for v, m in scores.items())
    holds = all(m >= COT_LEVEL for m in with_cot) and all(m <= NO_COT_CEILING for m in without)
    return Claim(
        f"CoT training makes two-hop facts generalize OOD, training without CoT does not: final "
        f"{PROBE} (mean over seeds) {shown}; the rule, every CoT variant at least {COT_LEVEL} "
        f"and no CoT at most {NO_COT_CEILING}, {'holds' if holds else 'does not hold'} "
        "(paper: 0.953 at 8k steps with CoT, 0.0 without).",
        "reproduces" if holds else "does not reproduce",
        "ood",
    )


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    checked = claim(result)
    items: list[Item] = [Section("The paper's claim, checked", items=[checked])]
    return {"claims": [checked.text], "verdict": checked.verdict}, items
