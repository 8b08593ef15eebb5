"""The claims page: every claim of the three papers (the registry, ``claims.yaml`` here) matched
to the claims that study folders checked (``StudyResult.claims`` in their summary.json), as one
markdown page (``reasonlab claims STUDY_DIR... --out docs/claims.md``).

A paper claim names the study and preset that decide it and the key(s) of the study claim that
carries our verdict. Its verdict on the page: the study claim's (with several keys: reproduces
when all do, does not reproduce when one does not, else undecided); "undecided" with the reason
when the study measures it without a verdict or the summary has no such claim; "not run here"
when no folder of its study was given. A paper claim the registry says this hardware cannot
decide (``cannot_decide_here``, required where ``key`` is null) is "cannot be decided here" with
why, unless its study reached a verdict anyway; every claim with a ``gpu`` command shows it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reasonlab.config import ConfigError
from reasonlab.config.loading import read_yaml
from reasonlab.core.files import read_json
from reasonlab.experiments.study_spec import STUDIES
from reasonlab.runs.summary import StudyClaim, StudyResult
from reasonlab.studies.verdicts import RULE

REGISTRY = Path(__file__).with_name("claims.yaml")
NOT_RUN = "not run here"
CANNOT = "cannot be decided here"


@dataclass(frozen=True)
class PaperClaim:
    """One claim of a paper (``claims.yaml``), and where it is decided here."""

    id: str
    paper: str
    claim: str
    paper_numbers: str
    study: str
    preset: str
    seeds: int
    keys: tuple[str, ...]  # study claim ids (fnmatch patterns); empty: no verdict recorded
    note: str = ""
    cannot_decide_here: str = ""
    gpu: str = ""

    @property
    def command(self) -> str:
        return f"reasonlab study {self.study} --preset {self.preset} --seeds {self.seeds}"


@dataclass(frozen=True)
class Registry:
    papers: dict[str, str]  # short name -> title
    claims: list[PaperClaim]


def _field(entry: dict[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {name}: missing or not text")
    return value.strip()


def load_registry(path: Path = REGISTRY) -> Registry:
    """The paper claims, checked: known papers, studies and presets, unique ids."""
    data = read_yaml(path)
    papers = data.get("papers")
    entries = data.get("claims")
    if not isinstance(papers, dict) or not isinstance(entries, list):
        raise ConfigError(f"{path}: expected 'papers' (a mapping) and 'claims' (a list)")
    claims: list[PaperClaim] = []
    for number, entry in enumerate(entries):
        where = f"{path}: claims[{number}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        study, preset = _field(entry, "study", where), _field(entry, "preset", where)
        if study not in STUDIES:
            raise ConfigError(f"{where}: study: unknown study {study!r}")
        if preset not in STUDIES[study].presets:
            raise ConfigError(f"{where}: preset: {study} has no preset {preset!r}")
        paper = _field(entry, "paper", where)
        if paper not in papers:
            raise ConfigError(f"{where}: paper: unknown paper {paper!r}")
        key = entry.get("key")
        keys = () if key is None else (key,) if isinstance(key, str) else tuple(key)
        if not all(isinstance(k, str) and k for k in keys):
            raise ConfigError(f"{where}: key: a study claim id, a list of them, or null")
        cannot = str(entry.get("cannot_decide_here") or "")
        if cannot and not entry.get("gpu"):
            raise ConfigError(f"{where}: gpu: the command that would decide it is missing")
        if not keys and not cannot:
            raise ConfigError(
                f"{where}: key: null needs cannot_decide_here (why no verdict is reached here)"
            )
        claims.append(
            PaperClaim(
                id=_field(entry, "id", where),
                paper=paper,
                claim=_field(entry, "claim", where),
                paper_numbers=_field(entry, "paper_numbers", where),
                study=study,
                preset=preset,
                seeds=int(entry.get("seeds", STUDIES[study].seeds)),
                keys=keys,
                note=str(entry.get("note") or ""),
                cannot_decide_here=cannot,
                gpu=str(entry.get("gpu") or ""),
            )
        )
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"{path}: id: given twice: {', '.join(twice)}")
    return Registry({str(k): str(v) for k, v in papers.items()}, claims)


def summary_path(given: Path) -> Path:
    """The summary.json of a study folder, or the summary file itself; a ConfigError in one
    line when it is neither."""
    given = Path(given)
    if given.is_file() and given.suffix == ".json":
        return given
    if not given.is_dir():
        raise ConfigError(f"STUDY_DIR {given}: not a folder or a study's summary.json")
    path = given / "summary.json"
    if not path.exists():
        raise ConfigError(f"STUDY_DIR {given}: not a study folder (no summary.json)")
    return path


def read_study(folder: Path) -> StudyResult:
    """A study's summary, from its folder or its summary.json; a ConfigError in one line for
    anything that is not one."""
    path = summary_path(folder)
    data = read_json(path)
    try:
        result = StudyResult.model_validate(data)
    except ValidationError:
        result = None
    if result is None or result.study not in STUDIES:
        raise ConfigError(
            f"STUDY_DIR {folder}: summary.json is not a study's (a run's or sweep's?)"
        )
    return result


@dataclass(frozen=True)
class Decision:
    verdict: str  # reproduces, does not reproduce, undecided, not run here, cannot be decided here
    reason: str  # why undecided (empty otherwise)
    matched: list[StudyClaim]


def decide(claim: PaperClaim, result: StudyResult | None) -> Decision:
    """The paper claim's verdict from its study's summary (module docstring); a claim the
    registry says this hardware cannot decide is "cannot be decided here", with why, unless its
    study reached a verdict anyway."""
    decision = _decide(claim, result)
    if claim.cannot_decide_here and decision.verdict in ("undecided", NOT_RUN):
        return Decision(CANNOT, claim.cannot_decide_here, decision.matched)
    return decision


def _decide(claim: PaperClaim, result: StudyResult | None) -> Decision:
    if result is None:
        return Decision(NOT_RUN, "", [])
    if not claim.keys:
        return Decision("undecided", "the study measures it without a verdict (see its report)", [])
    matched = [c for c in result.claims if any(fnmatch.fnmatchcase(c.id, k) for k in claim.keys)]
    missing = [k for k in claim.keys if not any(fnmatch.fnmatchcase(c.id, k) for c in matched)]
    if missing:
        why = (
            "the summary predates the claims record; rerun the study on its folder (completed "
            "runs are skipped) to record them"
            if not result.claims
            else f"the study recorded no claim {', '.join(missing)}"
        )
        return Decision("undecided", why, matched)
    verdicts = [c.verdict for c in matched]
    if None in verdicts:
        return Decision("undecided", "the study states the measurement without a verdict", matched)
    verdict = "undecided"
    if all(v == "reproduces" for v in verdicts):
        verdict = "reproduces"
    elif "does not reproduce" in verdicts:
        verdict = "does not reproduce"
    if verdict != "undecided" and result.seeds < claim.seeds:
        why = (
            f"the study's verdict, {verdict}, rests on {result.seeds} seed(s); the claim asks "
            f"{claim.seeds}: `{claim.command}`"
        )
        return Decision("undecided", why, matched)
    return Decision(verdict, "", matched)


def _date(folder: Path, result: StudyResult) -> str:
    if result.date:
        return result.date
    stamp = datetime.fromtimestamp(summary_path(folder).stat().st_mtime, timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M UTC") + " (file date)"


def _machine(result: StudyResult) -> str:
    """The machine and the runs' device, precision and versions, in one line."""
    runs = list(result.runs.values())
    parts = []
    machine = result.machine
    if machine:
        parts.append(f"{machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('device')}")
    else:
        parts.append("machine not recorded (summary predates the record)")
    devices = sorted({r.device for r in runs if r.device})
    precisions = sorted({r.precision for r in runs if r.precision})
    if devices:
        parts.append(f"device {', '.join(devices)}")
    if precisions:
        parts.append(f"precision {', '.join(precisions)}")
    versions = next((r.versions for r in runs if r.versions), {})
    if versions:
        parts.append(", ".join(f"{k} {v}" for k, v in versions.items()))
    return "; ".join(parts)


def _value(value: float | None) -> str:
    """A seed's value: '-' for none, a whole count (a step) as an integer, else 3 decimals."""
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() and abs(value) >= 10 else f"{value:.3f}"


def _seeds_line(claim: PaperClaim, result: StudyResult, matched: list[StudyClaim]) -> str:
    line = f"{result.seeds} (the deciding preset asks {claim.seeds})"
    if result.seeds == claim.seeds:
        line = str(result.seeds)
    values = [
        f"{c.id}: {label} " + ", ".join(_value(v) for v in per)
        for c in matched
        for label, per in (c.per_seed or {}).items()
    ]
    return line + (f"; per seed: {'; '.join(values)}" if values else "")


def _claim_lines(claim: PaperClaim, folder: Path | None, result: StudyResult | None) -> list[str]:
    decision = decide(claim, result)
    verdict = decision.verdict + (f" ({decision.reason})" if decision.reason else "")
    lines = [f"### {claim.id}: {claim.claim}", "", f"- **Verdict:** {verdict}"]
    if result is not None and folder is not None:
        for matched in decision.matched:
            lines.append(f"- **Ours** ({matched.id}): {matched.text}")
        lines.append(f"- **Seeds:** {_seeds_line(claim, result, decision.matched)}")
        preset = "" if result.preset == claim.preset else f" (this run: preset {result.preset})"
        lines.append(f"- **Run:** {_date(folder, result)}{preset}; {_machine(result)}")
    lines.append(f"- **Paper:** {claim.paper_numbers}")
    lines.append(f"- **Command:** `{claim.command}` ([{claim.study}](studies/{claim.study}.md))")
    if claim.gpu:
        lines.append(f"- **On a GPU:** `{claim.gpu}`")
    if claim.note:
        lines.append(f"- **Note:** {claim.note}")
    return [*lines, ""]


def claims_page(folders: list[Path], registry: Registry | None = None) -> str:
    """The markdown page for the study folders given (module docstring)."""
    registry = registry or load_registry()
    results: dict[str, tuple[Path, StudyResult]] = {}
    for folder in folders:
        result = read_study(folder)
        if result.study in results:
            first = results[result.study][0]
            raise ConfigError(f"STUDY_DIR {folder}: a second folder of {result.study} ({first})")
        results[result.study] = (Path(folder), result)
    lines = [
        "# The papers' claims, checked",
        "",
        f"Generated by `reasonlab claims` from {len(results)} study summaries. Each "
        "claim of the three papers (their abstracts' claims and the figures they rest on), with "
        "our verdict: reproduces, does not reproduce, undecided (with why), cannot be decided "
        "here (why, and the GPU command that would decide it), or not run here (no folder of "
        "its study was given: its command runs it). Our numbers are the study's own sentence, "
        "which holds them; the date and machine are the study run's.",
        "",
        "Every verdict is decided over seeds, never on the means alone; each claim's sentence "
        f"states its rule. The comparison rule several claims share: {RULE}.",
        "",
    ]
    if results:
        lines += ["| study | preset | seeds | date | machine |", "|---|---|---|---|---|"]
        for folder, result in results.values():
            row = [result.study, result.preset, str(result.seeds), _date(folder, result)]
            lines.append("| " + " | ".join([*row, _machine(result)]) + " |")
        lines.append("")
    for paper, title in registry.papers.items():
        lines += [f"## {title}", ""]
        for claim in registry.claims:
            if claim.paper == paper:
                folder, result = results.get(claim.study, (None, None))
                lines += _claim_lines(claim, folder, result)
    return "\n".join(lines).rstrip() + "\n"
