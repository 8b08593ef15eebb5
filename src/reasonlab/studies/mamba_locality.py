"""Analysis step of the mamba-locality study: final accuracy against d_state for each m-local DP
and for LIS (mean over seeds), the smallest d_state that reaches the threshold for each, and
the locality claim checked (that smallest state grows with m, and LIS needs at least as much as
every local DP).

Each run's DP is read from its config: ``m{task.locality}`` for an m-local DP, else its
``task.problem`` (``lis``); its state size is ``model.d_state``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.reporting.content import Claim, Figure, Item, Section, Table, Verdict
from reasonlab.runs.summary import StudyResult, StudyRun
from reasonlab.studies.verdicts import verdict_every_seed


def _plot(curves: dict[str, dict[int, float]], threshold: float) -> bytes:
    import matplotlib.pyplot as plt

    from reasonlab.reporting.plots import png_bytes

    fig, axis = plt.subplots(figsize=(6.0, 3.6))
    for label, by_state in curves.items():
        states = sorted(by_state)
        style = "--" if label == "lis" else "-"
        axis.plot(states, [by_state[d] for d in states], style, marker="o", label=label)
    axis.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("d_state (N)")
    axis.set_ylabel("exact match (greedy, streamed CoT)")
    axis.set_ylim(-0.03, 1.03)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("accuracy against state size: m-local DPs and LIS", fontsize=9)
    return png_bytes(fig)


def _smallest(by_state: dict[int, float], threshold: float) -> int | None:
    return next((d for d in sorted(by_state) if by_state[d] >= threshold), None)


STATE_EFFECT = 0.1  # the least change of accuracy across d_state that counts as an effect

Curves = dict[str, dict[int, float]]  # DP -> d_state -> exact match


def _needed(curves: Curves, threshold: float) -> dict[str, int]:
    """Each DP's smallest d_state at the threshold; never reached: twice the largest tried."""
    largest_state = max(d for by_state in curves.values() for d in by_state)
    needed = {}
    for dp, by_state in curves.items():
        smallest = _smallest(by_state, threshold)
        needed[dp] = largest_state * 2 if smallest is None else smallest
    return needed


def _order_holds(curves: Curves, threshold: float) -> bool:
    """The smallest d_state reaching the threshold grows with m, LIS needs at least as much as
    every local DP, and not every DP needs the same."""
    needed = _needed(curves, threshold)
    local = [needed[k] for k in sorted((k for k in needed if k != "lis"), key=lambda k: int(k[1:]))]
    grows = all(a <= b for a, b in itertools.pairwise(local))
    lis_most = all(needed["lis"] >= s for s in local) if "lis" in needed else True
    return grows and lis_most and len(set(needed.values())) > 1


def _state_matters(curves: Curves) -> bool:
    return any(max(v.values()) - min(v.values()) >= STATE_EFFECT for v in curves.values())


def _judged(curves: Curves, threshold: float) -> bool:
    """A seed says something about the state each DP needs when that need is measured for
    every DP (each reaches the threshold at some state size tried) or when the state size
    visibly matters (changes some DP's accuracy by STATE_EFFECT or more). A seed where some DP
    fails at every state size and no accuracy moves with the state measures learning, not
    state: the DPs' order there would be an accident."""
    measured = all(_smallest(v, threshold) is not None for v in curves.values())
    return measured or _state_matters(curves)


def _seed_verdict(seeds: list[Curves], threshold: float) -> tuple[Verdict, str]:
    """The locality rule over seeds (each seed's own curves), on the seeds that are judged
    (``_judged``), at least 2 of them: reproduces when the order holds in every judged seed,
    does not reproduce when it fails in every one, else undecided."""
    if len(seeds) < 2:
        return "undecided", " (fewer than 2 seeds)"
    judged = [c for c in seeds if _judged(c, threshold)]
    if len(judged) < 2:
        return "undecided", (
            f" (in {len(seeds) - len(judged)} of {len(seeds)} seeds some DP fails at every "
            f"state size and no DP's accuracy changes by {STATE_EFFECT:g} or more across them, "
            "so what differs between the DPs is not the state)"
        )
    holds = [_order_holds(c, threshold) for c in judged]
    verdict, why = verdict_every_seed(None, holds)
    if verdict == "undecided":
        why = f" (the order holds in {sum(holds)} of {len(holds)} seeds)"
    return verdict, why


def _claim(seeds: list[Curves], threshold: float) -> Claim:
    """The locality claim, decided seed by seed (``_seed_verdict``), stated with the means."""
    curves = {
        dp: {d: float(np.mean([c[dp][d] for c in seeds])) for d in by_state}
        for dp, by_state in seeds[0].items()
    }
    verdict, why = _seed_verdict(seeds, threshold)
    largest_state = max(d for by_state in curves.values() for d in by_state)
    per_seed = [
        ", ".join(f"{dp} {_smallest(v, threshold) or f'> {largest_state}'}" for dp, v in c.items())
        for c in seeds
    ]
    ranges = ", ".join(
        f"{dp} {min(v.values()):.3f}-{max(v.values()):.3f}" for dp, v in curves.items()
    )
    return Claim(
        "The state a Mamba needs grows with the locality m of the DP, and a non-local DP (LIS) "
        f"needs the most: {verdict}{why} here - smallest d_state reaching {threshold:g}, per "
        f"seed: {'; '.join(per_seed)}; accuracy over the state sizes (mean over seeds): "
        f"{ranges} (rule: the order - the smallest state never falling as m grows, LIS's at "
        "least every local DP's, not all the same - in every seed where each DP's need is "
        f"measured or the state changes some DP's accuracy by {STATE_EFFECT:g} or more, at "
        "least 2 such seeds).",
        verdict,
        "locality",
        {
            f"{dp}-d{d}": [c[dp][d] for c in seeds]
            for dp, by_state in curves.items()
            for d in by_state
        },
    )


def _dp(run: StudyRun) -> str:
    """The DP a run solves: m1, m2, ... for an m-local DP, else its problem (lis)."""
    task = run.config["task"]
    return f"m{task['locality']}" if task["problem"] == "local" else task["problem"]


def _dp_order(dp: str) -> tuple[int, str]:
    """m1, m2, m4, ... by m, then the non-local DPs by name."""
    local = dp[0] == "m" and dp[1:].isdigit()
    return (int(dp[1:]) if local else 10**9, dp)


def _seed_curves(result: StudyResult) -> list[Curves]:
    """Each seed's curves (DP -> d_state -> final exact match), for the seeds that have every
    (DP, d_state) of the study; a seed with a run missing is left out."""
    by_seed: dict[str, Curves] = defaultdict(lambda: defaultdict(dict))
    for name, run in result.runs.items():
        seed = name.rpartition("-s")[2]
        by_seed[seed][_dp(run)][run.config["model"]["d_state"]] = run.final.get("test") or 0.0
    cells = {(dp, d) for c in by_seed.values() for dp, v in c.items() for d in v}
    complete = []
    for seed in sorted(by_seed):
        curves = by_seed[seed]
        if {(dp, d) for dp, v in curves.items() for d in v} == cells:
            ordered = sorted(curves, key=_dp_order)
            complete.append({dp: dict(sorted(curves[dp].items())) for dp in ordered})
    return complete


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    threshold = next(iter(result.runs.values())).config["eval"]["threshold"]
    seeds = _seed_curves(result)
    claim = _claim(seeds, threshold)
    curves = {
        dp: {d: float(np.mean([c[dp][d] for c in seeds])) for d in by_state}
        for dp, by_state in seeds[0].items()
    }
    smallest = {dp: _smallest(by_state, threshold) for dp, by_state in curves.items()}
    states = sorted({d for by_state in curves.values() for d in by_state})
    rows = [
        [dp, *(by_state.get(d) for d in states), smallest[dp]] for dp, by_state in curves.items()
    ]
    items: list[Item] = [
        Section(
            "Accuracy against d_state",
            items=[
                Figure(
                    _plot(curves, threshold),
                    "accuracy against d_state",
                    f"Final exact match (mean over seeds); dotted: the threshold {threshold:g}.",
                ),
                Table(
                    ["DP", *(f"d_state {d}" for d in states), f"smallest d_state >= {threshold:g}"],
                    rows,
                ),
            ],
        ),
        Section("The locality claim, checked", items=[claim]),
    ]
    return {"accuracy": curves, "smallest_state": smallest, "claim": claim.text}, items
