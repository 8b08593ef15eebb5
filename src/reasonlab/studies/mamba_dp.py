"""Analysis step of the mamba-dp study: per problem, direct against CoT for both families (greedy
exact match of the whole completion, the answer alone, and the teacher-forced scores), the CoT
gain per family, and the claims checked: the GPT's CoT advantage (CoT at least 0.95, direct at
least 20 points lower) and the Mamba paper's "the Transformer gains more from CoT than Mamba".

Variant names are ``FAMILY-PROBLEM-MODE`` (mamba-dp.yaml); runs ``VARIANT-s{seed}``.
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

from reasonlab.reporting.study_report import mean_present, spread, table, variant_of

METRICS = {
    "test": "exact match (greedy)",
    "test.answer": "answer (greedy)",
    "test.answer_given_true_trace": "answer given the true trace",
    "test.token_accuracy_teacher_forced": "tokens, teacher-forced",
}


def _advantage_holds(cot: float, direct: float) -> bool:
    return cot >= 0.95 and cot - direct >= 0.20


def _gpt_advantage(problem: str, cot: dict[str, float], direct: dict[str, float]) -> str:
    """The rule on the seeds' means, and how many seeds (cot-sN against direct-sN) meet it."""
    if not cot or not direct:
        return f"{problem}: undecided (a run is missing)"
    mean_cot = sum(cot.values()) / len(cot)
    mean_direct = sum(direct.values()) / len(direct)
    verdict = "holds" if _advantage_holds(mean_cot, mean_direct) else "does not hold"
    paired = sorted(set(cot) & set(direct))
    met = sum(_advantage_holds(cot[seed], direct[seed]) for seed in paired)
    return (
        f"{problem}: the GPT's CoT advantage (CoT >= 0.95, direct >= 20 points lower) {verdict} "
        f"on the means - CoT {mean_cot:.3f}, direct {mean_direct:.3f}; it holds in {met} of "
        f"{len(paired)} seeds."
    )


def _gain_claim(problem: str, gains: dict[str, float | None]) -> str:
    gpt, mamba = gains.get("gpt"), gains.get("mamba")
    if gpt is None or mamba is None:
        return f"{problem}: undecided (a run is missing)"
    verdict = "reproduces" if gpt > mamba else "does not reproduce"
    return (
        f"{problem}: the Transformer gains more from CoT than Mamba {verdict} - CoT gain in "
        f"exact match: GPT {gpt:+.3f}, Mamba {mamba:+.3f}."
    )


def analyze(out: Path, result: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    runs_by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_seed: dict[str, dict[str, float]] = defaultdict(dict)  # variant -> seed -> exact match
    for name, run in result["runs"].items():
        runs_by_variant[variant_of(name)].append(run)
        if run["final"].get("test") is not None:
            by_seed[variant_of(name)][name.rpartition("-s")[2]] = run["final"]["test"]
    means: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    rows = []
    for variant, runs in runs_by_variant.items():
        family, problem, mode = variant.split("-")
        metrics = {key: mean_present([r["final"].get(key) for r in runs]) for key in METRICS}
        means.setdefault(problem, {}).setdefault(family, {})[mode] = metrics
        task = runs[0]["config"]["task"]
        rows.append(
            [
                problem,
                task["length"],
                family,
                mode,
                len(runs),
                runs[0].get("num_parameters"),
                *(spread([r["final"].get(key) for r in runs]) for key in METRICS),
            ]
        )
    advantage, gains_claims, gains = [], [], {}
    for problem, by_family in means.items():
        gains[problem] = {
            family: (
                None
                if modes.get("cot", {}).get("test") is None
                or modes.get("direct", {}).get("test") is None
                else modes["cot"]["test"] - modes["direct"]["test"]
            )
            for family, modes in by_family.items()
        }
        advantage.append(
            _gpt_advantage(problem, by_seed[f"gpt-{problem}-cot"], by_seed[f"gpt-{problem}-direct"])
        )
        gains_claims.append(_gain_claim(problem, gains[problem]))
    sections = [
        "<h2>Direct against CoT</h2>",
        "<p>Final scores on the ID test probe, mean ± spread over seeds. Exact match: the whole "
        "completion (trace and answer) generated greedily; answer: the answer token of that "
        "generation; answer given the true trace and tokens teacher-forced: every position "
        "predicted from the true tokens before it (Feng et al. score LIS and edit distance this "
        "way).</p>",
        table(
            ["problem", "size", "family", "mode", "seeds", "parameters", *METRICS.values()], rows
        ),
        "<h2>Claims, checked</h2>",
        "<ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in advantage + gains_claims)
        + "</ul>",
    ]
    analysis = {"means": means, "cot_gain": gains, "claims": advantage + gains_claims}
    return analysis, sections
