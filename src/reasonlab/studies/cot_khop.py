"""Analysis step of the cot-khop study: every run's k-hop probes answered directly (one long
sequence, as the probe is scored in training) and by chained CoT queries
(``analysis/khop.py``), on the same chains; means and spread over seeds per variant."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.reporting.study_report import table

CLAIM_LEVEL = 0.9  # the acceptance's bar for OOD three-hop by chained CoT (the paper: 0.96)


def _variant(run_name: str) -> str:
    return run_name.rsplit("-s", 1)[0]


def _summary(values: list[float]) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"


def analyze(out: Path, result: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    from reasonlab.analysis.khop import run_khop

    per_run = {
        name: run_khop(out / "runs" / name)["probes"]
        for name, run in result["runs"].items()
        if run.get("status") == "completed"
    }
    grouped: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    chains: dict[str, int] = {}
    for name, probes in per_run.items():
        for probe, scores in probes.items():
            cell = grouped[(_variant(name), probe)]
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
        if variant == "no-cot" or probe != "test_inferred_3hop_ood":
            continue
        mean = float(np.mean(values["chained"]))
        verdict = "holds" if mean >= CLAIM_LEVEL else "does not hold"
        claims.append(
            f"{variant}: chained CoT answers OOD three-hop questions at {mean:.3f} over "
            f"{len(values['chained'])} seeds ({chains[probe]} chains; direct "
            f"{float(np.mean(values['direct'])):.3f}); the bar {CLAIM_LEVEL} {verdict} "
            "(paper: 0.96)."
        )
    if not any(probe == "test_inferred_3hop_ood" for _, probe in grouped):
        claims.append("No OOD three-hop chain exists in this graph: the claim is not checked.")
    sections = [
        "<h2>k-hop questions: direct against chained CoT queries</h2>",
        "<p>Direct: the k-hop probe as one sequence, longer than any training sequence "
        "(positions never trained). Chained: two-hop queries in the run's own pattern, each "
        "started from the previous answer, and an atomic query for an odd last hop; the same "
        "chains. Exact match of the final entity; mean over seeds (min-max).</p>",
        table(["variant", "probe", "chains", "direct", "chained CoT", "seeds"], rows),
        "<h2>The claim, checked</h2>",
        "<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in claims) + "</ul>",
    ]
    return {"runs": per_run, "claims": claims}, sections
