"""What a report shows, as data: tables, figures, claims with their verdicts, paragraphs and
lists, in titled sections. A study's analysis returns these and never markup; ``html.py`` renders
them (and could render them to another format without touching a study).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

# A paper's claim checked against our runs; "undecided" when what would decide it is missing.
Verdict = Literal["reproduces", "does not reproduce", "undecided"]


@dataclass(frozen=True)
class Table:
    """Rows of cells under a header. A cell is shown as it is, a float with three decimals and
    None as a dash; format a cell yourself (a string) to show it otherwise."""

    header: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Figure:
    """An image (PNG bytes, or a PNG file written by an analysis) with its caption."""

    image: bytes | Path
    alt: str
    caption: str = ""

    def png(self) -> bytes:
        return self.image if isinstance(self.image, bytes) else self.image.read_bytes()


@dataclass(frozen=True)
class Claim:
    """A claim checked against the runs: the sentence the study's analysis data keeps (its rule
    and its evidence in it) and the verdict it reached; None where the sentence states the
    measurement alone. ``key``: the claim's stable id within its study (the study summary's
    ``claims`` and the paper claims registry, ``studies/claims.yaml``, match on it); None: the
    study runner numbers it by position. ``per_seed``: each seed's value of the quantities the
    verdict compares (label -> values), where the study records them."""

    text: str
    verdict: Verdict | None = None
    key: str | None = None
    per_seed: dict[str, list[float | None]] | None = None


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    """A list of short statements that are not claims (notes, settings, a paper's wording)."""

    lines: list[str]


@dataclass(frozen=True)
class Section:
    """A titled part of a report: an opening paragraph, then its items in order; a section
    inside a section is a level deeper."""

    title: str
    text: str = ""
    items: list[Item] = field(default_factory=list)


Item = Table | Figure | Claim | Paragraph | Bullets | Section
ItemT = TypeVar("ItemT", Claim, Figure)


@dataclass(frozen=True)
class StageCurves:
    """Probes whose per-stage scores (``PROBE.STAGE`` in metrics.jsonl, e.g. the two-hop
    probes' ``.bridge`` and ``.tail``) a study's report draws in one figure, under ``title``."""

    title: str
    probes: list[str]


def _walk(items: list[Item], kind: type[ItemT]) -> list[ItemT]:
    """Every item of ``kind`` among the items, sections walked depth first, in the report's
    order."""
    found: list[ItemT] = []
    for item in items:
        if isinstance(item, kind):
            found.append(item)
        elif isinstance(item, Section):
            found.extend(_walk(item.items, kind))
    return found


def claims_in(items: list[Item]) -> list[Claim]:
    """Every claim among the items, in the report's order."""
    return _walk(items, Claim)


def figures_in(items: list[Item]) -> list[Figure]:
    """Every figure among the items, in the report's order."""
    return _walk(items, Figure)
