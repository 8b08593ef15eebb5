"""Analysis step of the cot-khop study: every run's k-hop probes answered directly (one long
sequence, as the probe is scored in training) and by chained CoT queries
(``analysis/khop.py``), on the same chains; means and spread over seeds per variant."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.reporting.content import Claim, Item, Section, Table, Verdict
from reasonlab.reporting.seeds import variant_of
from reasonlab.runs.summary import StudyResult
from reasonlab.studies.verdicts import verdict_every_seed

CLAIM_LEVEL = 0.9  # the acceptance's bar for OOD three-hop by chained CoT (the paper: 0.96)
CLAIM_PROBE = "test_inferred_3hop_ood"  # the paper's claim: OOD three-hop chains


def _summary(values: list[float]) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"


def _verdict(chained: list[float]) -> tuple[Verdict, str]:
    """Reproduces when the mean and every seed reach CLAIM_LEVEL, does not reproduce when the
    mean and every seed fall short, else undecided (or with fewer than 2 seeds)."""
    on_mean = float(np.mean(chained)) >= CLAIM_LEVEL
    return verdict_every_seed(on_mean, [v >= CLAIM_LEVEL for v in chained])


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    from reasonlab.analysis.khop import run_khop

    per_run = {
        name: run_khop(out / "runs" / name)["probes"]
        for name, run in result.runs.items()
        if run.status == "completed"
    }
    without_cot = {
        variant_of(name) for name, run in result.runs.items() if run.config["task"]["cot"] == "none"
    }
    grouped: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    chains: dict[str, int] = {}
    for name, probes in per_run.items():
        for probe, scores in probes.items():
            cell = grouped[(variant_of(name), probe)]
            cell["direct"].append(scores["direct"])
            cell["chained"].append(scores["accuracy"])
            chains[probe] = scores["chains"]
    rows = [
        [
            variant,
            probe,
            chains[probe],
            _summary(v["direct"]),
            _summary(v["chained"]),
            len(v["chained"]),
        ]
        for (variant, probe), v in grouped.items()
    ]
    claims = []
    for (variant, probe), values in grouped.items():
        if variant in without_cot or probe != CLAIM_PROBE:
            continue
        verdict, why = _verdict(values["chained"])
        mean = float(np.mean(values["chained"]))
        each = " / ".join(f"{v:.3f}" for v in values["chained"])
        claims.append(
            Claim(
                f"{variant}: chained CoT answers OOD three-hop questions at {mean:.3f} ({each}) "
                f"over {len(values['chained'])} seeds ({chains[probe]} chains; direct "
                f"{float(np.mean(values['direct'])):.3f}): {verdict}{why} (rule: the bar "
                f"{CLAIM_LEVEL} on the mean and in every seed; paper: 0.96).",
                verdict,
                f"chained-{variant}",
                {"chained": [float(v) for v in values["chained"]]},
            )
        )
    if not any(probe == CLAIM_PROBE for _, probe in grouped):
        claims.append(
            Claim(
                "No OOD three-hop chain exists in this graph: the claim is not checked.",
                "undecided",
                "chained",
            )
        )
    items: list[Item] = [
        Section(
            "k-hop questions: direct against chained CoT queries",
            "Direct: the k-hop probe as one sequence, longer than any training sequence "
            "(positions never trained). Chained: two-hop queries in the run's own pattern, each "
            "started from the previous answer, and an atomic query for an odd last hop; the same "
            "chains. Exact match of the final entity; mean over seeds (min-max).",
            [Table(["variant", "probe", "chains", "direct", "chained CoT", "seeds"], rows)],
        ),
        Section("The claim, checked", items=claims),
    ]
    return {"runs": per_run, "claims": [claim.text for claim in claims]}, items
