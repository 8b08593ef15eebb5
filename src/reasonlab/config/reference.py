"""Every config key with its default and meaning, written from the config classes themselves
(their pydantic ``Field`` descriptions), so the reference cannot drift from the code.

``defaults_yaml()`` is what ``reasonlab config --defaults`` prints (a config file with a comment on
every key); ``defaults_markdown()`` is docs/config.md (``--format markdown``; a test keeps the file
equal to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from reasonlab.config.errors import section_models
from reasonlab.config.schema import RunConfig


@dataclass
class KeyDoc:
    path: str  # dotted: task.num_entities
    default: Any
    meaning: str
    kind: str | None = None  # the task or model kind the key belongs to, in a section of kinds


@dataclass
class SectionDoc:
    name: str
    meaning: str
    kinds: list[tuple[str | None, list[KeyDoc]]]  # (kind, its keys); kind None: one class


def _choices(annotation: Any) -> list[str]:
    """The allowed values of a Literal (or optional Literal) annotation."""
    if get_origin(annotation) is Literal:
        return [str(value) for value in get_args(annotation)]
    return [choice for arg in get_args(annotation) for choice in _choices(arg)]


def _upper_bound(field: FieldInfo) -> int | None:
    """The largest value an integer field takes (its ``le``), stated in the reference."""
    if int not in (field.annotation, *get_args(field.annotation)):
        return None
    bounds = [getattr(item, "le", None) for item in field.metadata]
    return next((bound for bound in bounds if bound is not None), None)


def _meaning(field: FieldInfo) -> str:
    meaning = field.description or ""
    choices = _choices(field.annotation)
    if choices and not all(choice in meaning for choice in choices):
        meaning += f" (one of: {', '.join(choices)})"
    bound = _upper_bound(field)
    if bound is not None and f"{bound:,}" not in meaning:
        meaning += f" (at most {'2^63 - 1' if bound == 2**63 - 1 else f'{bound:,}'})"
    return meaning


def _keys(model: type[BaseModel], prefix: str, kind: str | None) -> list[KeyDoc]:
    return [
        KeyDoc(
            f"{prefix}{name}", field.get_default(call_default_factory=True), _meaning(field), kind
        )
        for name, field in model.model_fields.items()
    ]


def _kind(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    return None if field is None else field.default


def config_reference() -> tuple[list[KeyDoc], list[SectionDoc]]:
    """Top-level keys, then each section with its keys (per kind where a section has several:
    the default kind first)."""
    top, sections = [], []
    for name, field in RunConfig.model_fields.items():
        models = section_models(field.annotation)
        if not models:
            top.append(KeyDoc(name, field.get_default(), _meaning(field)))
            continue
        default_kind = getattr(field.get_default(call_default_factory=True), "kind", None)
        models.sort(key=lambda model: _kind(model) != default_kind)  # stable: the default first
        several = len(models) > 1
        kinds = []
        for model in models:
            kind = _kind(model) if several else None
            kinds.append((kind, _keys(model, f"{name}.", kind)))
        sections.append(SectionDoc(name, field.description or "", kinds))
    return top, sections


def yaml_value(value: Any) -> str:
    """A default as it is written in YAML: null, true, 0.001, [0.9, 0.999], after_relations."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def defaults_yaml() -> str:
    """A config file of every key at its default, each with its meaning as a comment."""
    top, sections = config_reference()
    rows: list[tuple[str, str]] = []  # (text, comment); comments are aligned afterwards
    for key in top:
        rows.append((f"{key.path}: {yaml_value(key.default)}", key.meaning))
    for section in sections:
        rows.append(("", ""))
        for index, (kind, keys) in enumerate(section.kinds):
            # Other kinds of a section are alternatives: shown commented out.
            mark = "" if index == 0 else "# "
            if kind is not None and index > 0:
                rows.append((f"# or, with {section.name}.kind: {kind}", ""))
            rows.append((f"{mark}{section.name}:", section.meaning if index == 0 else ""))
            for key in keys:
                name = key.path.split(".", 1)[1]
                rows.append((f"{mark}  {name}: {yaml_value(key.default)}", key.meaning))
    width = max(len(text) for text, comment in rows if comment) + 2
    lines = [
        "# Every reasonlab config key at its default, with its meaning",
        "# (reasonlab config --defaults). A config file holds any subset of these keys.",
        "",
    ]
    for text, comment in rows:
        lines.append(f"{text.ljust(width)}# {comment}" if comment else text)
    return "\n".join(lines) + "\n"


def _table(keys: list[KeyDoc]) -> list[str]:
    """A markdown table of keys: key, default, meaning."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key in keys:
        lines.append(f"| `{key.path}` | `{cell(yaml_value(key.default))}` | {cell(key.meaning)} |")
    return lines


def defaults_markdown() -> str:
    """docs/config.md: every key with its default and meaning, a table per section (and per
    kind, for the sections keyed by ``kind``)."""
    top, sections = config_reference()
    lines = [
        "# Config reference",
        "",
        "<!-- Generated from the config classes by `python -m reasonlab.cli.docs --write` "
        "(the same as `reasonlab config --defaults --format markdown`); do not edit. -->",
        "",
        "Every key of a run config with its default and meaning. A YAML config holds any subset "
        "of these keys (the rest keep their defaults); `--set key.sub=value` overrides one key "
        "on the command line. `reasonlab config --defaults` prints the same keys as a config "
        "file with a comment on each, and `reasonlab config CONFIG` a config resolved with "
        "every key filled in.",
        "",
        "## Top-level keys",
        "",
        *_table(top),
    ]
    for section in sections:
        lines += ["", f"## {section.name} — {section.meaning}", ""]
        if section.kinds[0][0] is None:
            lines += _table(section.kinds[0][1])
            continue
        kinds = [
            f"{kind} (the default)" if i == 0 else str(kind)
            for i, (kind, _) in enumerate(section.kinds)
        ]
        lines.append(
            f"`{section.name}.kind` picks one of: {', '.join(kinds)}. Each kind has its own keys."
        )
        for kind, keys in section.kinds:
            lines += ["", f"### {section.name}.kind: {kind}", "", *_table(keys)]
    return "\n".join(lines) + "\n"
