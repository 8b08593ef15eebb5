"""Analysis step of the mamba-dp study: per problem, direct against CoT for both families (greedy
exact match of the whole completion, the answer alone, and the teacher-forced scores), the CoT
gain per family, and the claims checked: the GPT's CoT advantage (CoT at least 0.95, direct at
least 20 points lower) and the Mamba paper's "the Transformer gains more from CoT than Mamba",
decided over seeds with the spread (``studies/verdicts.py``: the per-seed gains, cot-sN minus
direct-sN, must differ on the means with the seeds' ranges apart).

A run's family, problem and mode are read from its config (model.kind, task.problem, task.mode);
runs are ``VARIANT-s{seed}`` (mamba-dp.yaml).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from reasonlab.reporting.content import Claim, Item, Section, Table
from reasonlab.reporting.seeds import mean_present, spread
from reasonlab.runs.summary import StudyResult, StudyRun
from reasonlab.studies.verdicts import verdict_every_seed, verdict_from_seeds

METRICS = {
    "test": "exact match (greedy)",
    "test.answer": "answer (greedy)",
    "test.answer_given_true_trace": "answer given the true trace",
    "test.token_accuracy_teacher_forced": "tokens, teacher-forced",
}


def _advantage_holds(cot: float, direct: float) -> bool:
    return cot >= 0.95 and cot - direct >= 0.20


def _gpt_advantage(problem: str, cot: dict[str, float], direct: dict[str, float]) -> Claim:
    """The rule on the seeds' means and on each seed (cot-sN against direct-sN): reproduces when
    both meet it in every seed, does not reproduce when the means and no seed meet it, else
    undecided (the seeds disagree, or fewer than two)."""
    key = f"advantage-{problem}"
    if not cot or not direct:
        return Claim(f"{problem}: undecided (a run is missing)", "undecided", key)
    mean_cot = sum(cot.values()) / len(cot)
    mean_direct = sum(direct.values()) / len(direct)
    holds = _advantage_holds(mean_cot, mean_direct)
    paired = sorted(set(cot) & set(direct))
    each = [_advantage_holds(cot[seed], direct[seed]) for seed in paired]
    met = sum(each)
    verdict, why = verdict_every_seed(holds, each)
    return Claim(
        f"{problem}: the GPT's CoT advantage (CoT >= 0.95, direct >= 20 points lower): "
        f"{verdict}{why} - it {'holds' if holds else 'does not hold'} on the means (CoT "
        f"{mean_cot:.3f}, direct {mean_direct:.3f}) and holds in {met} of {len(paired)} seeds "
        "(rule: on the means and in every seed).",
        verdict,
        key,
        {"cot": [cot[s] for s in sorted(cot)], "direct": [direct[s] for s in sorted(direct)]},
    )


def _seed_gains(cot: dict[str, float], direct: dict[str, float]) -> list[float]:
    """Each seed's CoT gain (cot-sN minus direct-sN), over the seeds both have."""
    return [cot[seed] - direct[seed] for seed in sorted(set(cot) & set(direct))]


def _gain_claim(
    problem: str, gains: dict[str, float | None], per_seed: dict[str, list[float]]
) -> Claim:
    """The families' mean gains, decided over the per-seed gains with the spread."""
    gpt, mamba = gains.get("gpt"), gains.get("mamba")
    key = f"gain-{problem}"
    if gpt is None or mamba is None:
        return Claim(f"{problem}: undecided (a run is missing)", "undecided", key)
    by_gpt, by_mamba = per_seed.get("gpt", []), per_seed.get("mamba", [])
    verdict, why = verdict_from_seeds(by_gpt, by_mamba)
    seeds = "; ".join(
        f"{family} {', '.join(f'{v:+.3f}' for v in values)}"
        for family, values in (("GPT", by_gpt), ("Mamba", by_mamba))
    )
    return Claim(
        f"{problem}: the Transformer gains more from CoT than Mamba {verdict}{why} - CoT gain in "
        f"exact match: GPT {gpt:+.3f}, Mamba {mamba:+.3f} (per seed: {seeds}; decided on the "
        "means with the seeds' ranges apart).",
        verdict,
        key,
        {"gpt": by_gpt, "mamba": by_mamba},
    )


def _setting(run: StudyRun) -> tuple[str, str, str]:
    """(family, problem, mode) of a run, from its config."""
    return run.config["model"]["kind"], run.config["task"]["problem"], run.config["task"]["mode"]


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    runs_by_setting: dict[tuple[str, str, str], list[StudyRun]] = defaultdict(list)
    by_seed: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)  # seed -> exact match
    for name, run in result.runs.items():
        setting = _setting(run)
        runs_by_setting[setting].append(run)
        if run.final.get("test") is not None:
            by_seed[setting][name.rpartition("-s")[2]] = run.final["test"]
    means: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    rows = []
    for (family, problem, mode), runs in runs_by_setting.items():
        metrics = {key: mean_present([r.final.get(key) for r in runs]) for key in METRICS}
        means.setdefault(problem, {}).setdefault(family, {})[mode] = metrics
        rows.append(
            [
                problem,
                runs[0].config["task"]["length"],
                family,
                mode,
                len(runs),
                runs[0].num_parameters,
                *(spread([r.final.get(key) for r in runs]) for key in METRICS),
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
            _gpt_advantage(
                problem, by_seed[("gpt", problem, "cot")], by_seed[("gpt", problem, "direct")]
            )
        )
        seed_gains = {
            family: _seed_gains(
                by_seed[(family, problem, "cot")], by_seed[(family, problem, "direct")]
            )
            for family in by_family
        }
        gains_claims.append(_gain_claim(problem, gains[problem], seed_gains))
    claims = advantage + gains_claims
    items: list[Item] = [
        Section(
            "Direct against CoT",
            "Final scores on the ID test probe, mean ± spread over seeds. Exact match: the whole "
            "completion (trace and answer) generated greedily; answer: the answer token of that "
            "generation; answer given the true trace and tokens teacher-forced: every position "
            "predicted from the true tokens before it (Feng et al. score LIS and edit distance "
            "this way).",
            [
                Table(
                    ["problem", "size", "family", "mode", "seeds", "parameters", *METRICS.values()],
                    rows,
                )
            ],
        ),
        Section("Claims, checked", items=claims),
    ]
    analysis = {"means": means, "cot_gain": gains, "claims": [claim.text for claim in claims]}
    return analysis, items
