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


def _claim(curves: dict[str, dict[int, float]], threshold: float) -> Claim:
    """The locality claim: the smallest d_state that reaches the threshold grows with m, and LIS
    needs the most. Decided only where the state size changes some DP's accuracy by
    STATE_EFFECT or more; otherwise what the runs show is not about the state."""
    smallest = {dp: _smallest(by_state, threshold) for dp, by_state in curves.items()}
    largest_state = max(d for by_state in curves.values() for d in by_state)
    effects = {dp: max(v.values()) - min(v.values()) for dp, v in curves.items()}
    ordered = [
        smallest[k] for k in sorted((k for k in smallest if k != "lis"), key=lambda k: int(k[1:]))
    ]
    as_numbers = [largest_state * 2 if s is None else s for s in ordered]
    grows = all(a <= b for a, b in itertools.pairwise(as_numbers))
    lis = smallest.get("lis")
    lis_number = largest_state * 2 if lis is None else lis
    lis_most = all(lis_number >= s for s in as_numbers)
    verdict: Verdict = "undecided"
    why = ""
    if all(s is None for s in ordered):
        why = " (no local DP reached the threshold at any state size tried)"
    elif all(effect < STATE_EFFECT for effect in effects.values()):
        why = (
            f" (no DP's accuracy changes by {STATE_EFFECT:g} or more across the state "
            "sizes tried, so what differs between the DPs is not the state)"
        )
    elif grows and lis_most and len(set(as_numbers)) > 1:
        verdict = "reproduces"
    else:
        verdict = "does not reproduce"
    text = ", ".join(
        f"{k} {v if v is not None else f'> {largest_state}'}" for k, v in smallest.items()
    )
    ranges = ", ".join(
        f"{dp} {min(v.values()):.3f}-{max(v.values()):.3f}" for dp, v in curves.items()
    )
    return Claim(
        "The state a Mamba needs grows with the locality m of the DP, and a non-local DP (LIS) "
        f"needs the most: {verdict}{why} here - smallest d_state reaching {threshold:g}: {text}; "
        f"accuracy over the state sizes: {ranges}.",
        verdict,
        "locality",
    )


def _dp(run: StudyRun) -> str:
    """The DP a run solves: m1, m2, ... for an m-local DP, else its problem (lis)."""
    task = run.config["task"]
    return f"m{task['locality']}" if task["problem"] == "local" else task["problem"]


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    threshold = 0.9
    for run in result.runs.values():
        values[_dp(run)][run.config["model"]["d_state"]].append(run.final.get("test") or 0.0)
        threshold = run.config["eval"]["threshold"]
    curves = {
        dp: {d: float(np.mean(v)) for d, v in sorted(by_state.items())}
        for dp, by_state in values.items()
    }
    smallest = {dp: _smallest(by_state, threshold) for dp, by_state in curves.items()}
    claim = _claim(curves, threshold)
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
