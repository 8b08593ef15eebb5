"""Analysis step of the cot-twohop study: the paper's claim (arXiv 2502.04667) that CoT training
makes two-hop facts generalize out of distribution while the same model without CoT does not,
checked on the runs' final scores. It reads summary.json only: nothing is trained or scored
again.

The rule: every CoT variant's OOD two-hop accuracy is at least ``COT_LEVEL`` and the no-CoT
variant's at most ``NO_COT_CEILING``, checked on the means over seeds and in each seed (the
variants' runs of that seed): reproduces when it holds on the means and in every seed, does not
reproduce when it fails on the means and in every seed, undecided when the seeds disagree; a
variant without a completed run leaves it undecided.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from reasonlab.reporting.content import Claim, Item, Section
from reasonlab.reporting.seeds import variant_of
from reasonlab.runs.summary import StudyResult
from reasonlab.studies.verdicts import verdict_every_seed

PROBE = "test_inferred_ood"
ID_PROBE = "test_inferred_iid"
COT_LEVEL = 0.9  # OOD generalization: the paper reports 0.953 at 8k steps, 0.978 at 20k
NO_COT_CEILING = 0.1  # no OOD generalization: the paper reports 0.0 even after grokking


def _scores(result: StudyResult) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Per variant each completed seed's final OOD accuracy (seed -> score; empty: none
    completed), and its CoT pattern."""
    values: dict[str, dict[str, float]] = defaultdict(dict)
    cots: dict[str, str] = {}
    for name, run in result.runs.items():
        variant = variant_of(name)
        cots[variant] = str(run.config.get("task", {}).get("cot", "none"))
        values.setdefault(variant, {})
        score = run.final.get(PROBE)
        if run.status == "completed" and score is not None:
            values[variant][name.rpartition("-s")[2]] = score
    return values, cots


def _holds(scores: dict[str, float], cots: dict[str, str]) -> bool:
    return all(
        (m >= COT_LEVEL) if cots[v] != "none" else (m <= NO_COT_CEILING) for v, m in scores.items()
    )


def claim(result: StudyResult) -> Claim:
    """The paper's claim with its verdict (module docstring)."""
    values, cots = _scores(result)
    missing = [v for v, by_seed in values.items() if not by_seed]
    if missing or len({cots[v] == "none" for v in values}) < 2:
        reason = (
            f"no completed run of {', '.join(missing)}"
            if missing
            else "it needs a variant with CoT and one without"
        )
        return Claim(
            f"CoT generalizes OOD, no CoT does not: undecided ({reason}).", "undecided", "ood"
        )
    means = {v: sum(by_seed.values()) / len(by_seed) for v, by_seed in values.items()}
    seeds = sorted({seed for by_seed in values.values() for seed in by_seed})
    per_seed = [
        _holds({v: by_seed[s] for v, by_seed in values.items() if s in by_seed}, cots)
        for s in seeds
    ]
    on_means = _holds(means, cots)
    verdict, _ = verdict_every_seed(on_means, per_seed, min_seeds=1)
    shown = "; ".join(
        f"{v} {means[v]:.3f} ({' / '.join(f'{x:.3f}' for x in by_seed.values())})"
        for v, by_seed in values.items()
    )
    return Claim(
        f"CoT training makes two-hop facts generalize OOD, training without CoT does not: "
        f"{verdict} - final {PROBE}, mean (each seed): {shown}; the rule, every CoT variant at "
        f"least {COT_LEVEL} and no CoT at most {NO_COT_CEILING}, "
        f"{'holds' if on_means else 'does not hold'} on the means and holds in "
        f"{sum(per_seed)} of {len(per_seed)} seeds (paper: 0.953 at 8k steps with CoT, 0.0 "
        "without).",
        verdict,
        "ood",
        {v: list(by_seed.values()) for v, by_seed in values.items()},
    )


def _steps_to_id(result: StudyResult) -> dict[str, dict[str, int | None]]:
    """Per variant each completed seed's first evaluated step at the threshold on the ID
    two-hop probe (None: never within the run)."""
    steps: dict[str, dict[str, int | None]] = defaultdict(dict)
    for name, run in result.runs.items():
        if run.status == "completed":
            seed = name.rpartition("-s")[2]
            steps[variant_of(name)][seed] = run.steps_to_threshold.get(ID_PROBE)
    return steps


def _faster(steps: dict[str, int | None], cots: dict[str, str]) -> bool:
    """One seed: every CoT variant reaches the ID threshold, and the no-CoT variant does not,
    or only later than every CoT variant."""
    cot = [s for v, s in steps.items() if cots[v] != "none"]
    plain = [s for v, s in steps.items() if cots[v] == "none"]
    reached = [s for s in cot if s is not None]
    if not reached or len(reached) < len(cot) or not plain:
        return False
    return all(p is None or p > max(reached) for p in plain)


def speed_claim(result: StudyResult) -> Claim:
    """CoT speeds up convergence: decided seed by seed (``_faster``, over the seeds that have
    every variant): reproduces when it holds in every seed, does not reproduce when it holds in
    none, else undecided. One seed decides the study's report, as the OOD claim does; the claims
    page asks the registry's seeds."""
    _, cots = _scores(result)
    steps = _steps_to_id(result)
    seeds = sorted({seed for by_seed in steps.values() for seed in by_seed})
    complete = [s for s in seeds if all(s in by_seed for by_seed in steps.values())]
    held = [_faster({v: by_seed[s] for v, by_seed in steps.items()}, cots) for s in complete]
    verdict, why = verdict_every_seed(None, held, min_seeds=1)
    total = next(iter(result.runs.values())).config.get("train", {}).get("steps")
    shown = "; ".join(
        f"{v} {' / '.join('never' if by_seed[s] is None else str(by_seed[s]) for s in complete)}"
        for v, by_seed in steps.items()
    )
    return Claim(
        f"CoT speeds up convergence: every CoT variant reaches the ID threshold, the variant "
        f"without CoT later or not within the {total} steps: {verdict}{why} - first evaluated step "
        f"at the threshold on {ID_PROBE}, each seed: {shown} (rule: in every seed; the paper: "
        "CoT ~1.0 ID by ~4k steps, without CoT only after grokking, >1M steps).",
        verdict,
        "speed",
        {
            v: [float(x) if x is not None else None for x in by_seed.values()]
            for v, by_seed in steps.items()
        },
    )


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    checked = [claim(result), speed_claim(result)]
    items: list[Item] = [Section("The paper's claims, checked", items=checked)]
    return {"claims": [c.text for c in checked], "verdict": checked[0].verdict}, items
