"""The mamba-copy study's three claims, each decided over seeds with the spread (every seed on
each side, not the means alone):

- ``faster`` "Transformers learn COPY faster": each seed's first evaluated step at 0.95 on the
  GPT's own maximum length (the shortest test length where no seed of either reaches 0.95 there).
  Reproduces when every GPT seed reaches it and each does before every Mamba seed (a Mamba that
  never reaches it counts as later than any step); does not reproduce when every Mamba seed
  reaches it no later than every GPT seed; otherwise undecided.
- ``longer`` "Mamba fails COPY at the longer maximum length where a Transformer learns": each
  seed's final exact match at the GPT's own maximum length. Reproduces when every GPT seed has
  learned it (>= LEARNED) and every Mamba seed failed (< FAILED); does not reproduce when every
  GPT seed learned and no Mamba seed failed; undecided otherwise (a GPT seed that did not learn
  leaves nothing to compare the Mamba with).
- ``width-depth`` "Shrinking Mamba's width hurts more than removing a layer": the narrow
  (expand 1) against the shallow (1 layer) Mamba, final exact match, by ``verdict_from_seeds``
  with the margin MARGIN, at the narrow Mamba's own maximum length or else the shortest one:
  a length where no seed of either reaches MARGIN compares two failures and is skipped.

Each needs at least two seeds a side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reasonlab.reporting.content import Claim, Verdict
from reasonlab.reporting.seeds import mean_present
from reasonlab.studies.verdicts import verdict_from_seeds

LEARNED = 0.9  # final exact match at or above which a seed has learned a length
FAILED = 0.5  # below which it has failed it
MARGIN = 0.05  # accuracies closer than this are not told apart
MIN_SEEDS = 2

Finals = dict[str, list[dict[str, float | None]]]  # variant -> each seed's final scores
Steps = dict[str, dict[str, list[int | None]]]  # variant -> probe -> each seed's first step


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _steps_text(steps: Sequence[int | None]) -> str:
    return " / ".join("never" if s is None else str(s) for s in steps)


def _values_text(values: Sequence[float | None]) -> str:
    return " / ".join(_fmt(v) for v in values)


def _too_few(*sides: Sequence[object]) -> bool:
    return any(len(side) < MIN_SEEDS for side in sides)


def faster_verdict(gpt: Sequence[int | None], mamba: Sequence[int | None]) -> Verdict:
    """The ``faster`` rule (module docstring) on each seed's first step at 0.95 (None: never)."""
    if _too_few(gpt, mamba):
        return "undecided"
    as_number = [math.inf if s is None else s for s in (*gpt, *mamba)]
    by_gpt, by_mamba = as_number[: len(gpt)], as_number[len(gpt) :]
    if max(by_gpt) < math.inf and max(by_gpt) < min(by_mamba):
        return "reproduces"
    if max(by_mamba) < math.inf and max(by_mamba) <= min(by_gpt):
        return "does not reproduce"
    return "undecided"


def longer_verdict(gpt: Sequence[float | None], mamba: Sequence[float | None]) -> Verdict:
    """The ``longer`` rule (module docstring) on each seed's final exact match."""
    if _too_few(gpt, mamba) or not all((v or 0.0) >= LEARNED for v in gpt):
        return "undecided"
    failed = [(v or 0.0) < FAILED for v in mamba]
    if all(failed):
        return "reproduces"
    return "does not reproduce" if not any(failed) else "undecided"


def _faster(steps: Steps, gpt: str, mamba: str, probes: list[str]) -> Claim:
    where = probes[0]
    for probe in probes:  # the own length, then the shortest
        if any(s is not None for s in steps[gpt][probe] + steps[mamba][probe]):
            where = probe
            break
    by_gpt, by_mamba = steps[gpt][where], steps[mamba][where]
    verdict = faster_verdict(by_gpt, by_mamba)
    return Claim(
        f"Transformers learn COPY faster: {verdict} - first step at 0.95 on {where}, per seed: "
        f"GPT {_steps_text(by_gpt)}, Mamba d_state 16 {_steps_text(by_mamba)} (rule: every GPT "
        "seed before every Mamba seed).",
        verdict,
        "faster",
        {"gpt_first_step": list(by_gpt), "mamba_first_step": list(by_mamba)},
    )


def _longer(finals: Finals, gpt: str, mamba: str, probe: str) -> Claim:
    by_gpt = [f.get(probe) for f in finals[gpt]]
    by_mamba = [f.get(probe) for f in finals[mamba]]
    verdict = longer_verdict(by_gpt, by_mamba)
    learned = sum((v or 0.0) >= LEARNED for v in by_gpt)
    why = ""
    if learned < len(by_gpt):
        why = f" (the GPT learned it in {learned} of {len(by_gpt)} seeds)"
    return Claim(
        f"Mamba fails COPY at the longer maximum length where a Transformer learns: {verdict}{why}"
        f" - final {probe} exact match per seed: GPT {_values_text(by_gpt)} (mean "
        f"{_fmt(mean_present(by_gpt))}), Mamba {_values_text(by_mamba)} (mean "
        f"{_fmt(mean_present(by_mamba))}); rule: every GPT seed at least {LEARNED:g}, every Mamba "
        f"seed below {FAILED:g}.",
        verdict,
        "longer",
        {"gpt": [v or 0.0 for v in by_gpt], "mamba": [v or 0.0 for v in by_mamba]},
    )


def _width_depth(finals: Finals, narrow: str, shallow: str, probes: list[str]) -> Claim:
    verdict: Verdict = "undecided"
    why = f" (no seed of either reaches {MARGIN:g} at any length checked)"
    where = probes[0]
    for probe in probes:
        by_narrow = [f.get(probe) or 0.0 for f in finals[narrow]]
        by_shallow = [f.get(probe) or 0.0 for f in finals[shallow]]
        if max(by_narrow + by_shallow) < MARGIN:
            continue  # two failures: nothing to compare
        verdict, why = verdict_from_seeds(by_shallow, by_narrow, MARGIN, MIN_SEEDS)
        where = probe
        break
    by_narrow = [f.get(where) or 0.0 for f in finals[narrow]]
    by_shallow = [f.get(where) or 0.0 for f in finals[shallow]]
    return Claim(
        "Shrinking Mamba's width hurts more than removing a layer (about the same parameter "
        f"count): {verdict}{why} - final {where} exact match per seed: narrow (expand 1) "
        f"{_values_text(by_narrow)}, shallow (1 layer) {_values_text(by_shallow)} (rule: the "
        f"shallow above the narrow by {MARGIN:g}, on the means and seed by seed).",
        verdict,
        "width-depth",
        {"narrow": by_narrow, "shallow": by_shallow},
    )


def copy_claims(
    finals: Finals, steps: Steps, own: dict[str, str], shortest: str, roles: dict[str, str]
) -> list[Claim]:
    """The three claims (a claim whose variants the study lacks is left out). ``own``: each
    variant's probe at its own maximum length; ``roles``: the study's roles (mamba_copy.yaml)."""
    claims = []
    gpt, mamba = roles.get("transformer_short"), roles.get("mamba_short")
    if gpt in steps and mamba in steps:
        claims.append(_faster(steps, gpt, mamba, list(dict.fromkeys([own[gpt], shortest]))))
    gpt, mamba = roles.get("transformer_long"), roles.get("mamba_long")
    if gpt in finals and mamba in finals:
        claims.append(_longer(finals, gpt, mamba, own[gpt]))
    narrow, shallow = roles.get("mamba_narrow"), roles.get("mamba_shallow")
    if narrow in finals and shallow in finals:
        probes = list(dict.fromkeys([own[narrow], shortest]))
        claims.append(_width_depth(finals, narrow, shallow, probes))
    return claims
