"""``--set key.sub=value`` overrides: parsed (the value read as YAML) and applied to a config's
data before it is validated; setting ``task.kind`` or ``model.kind`` switches the section's kind.

A mapping set on a section merges into it: ``--set 'train={steps: 5}'`` changes train.steps and
keeps every other key of train (it is ``--set train.steps=5``), never resets the section."""

from __future__ import annotations

import re
from typing import Any

from reasonlab.config.base import KIND_SECTIONS
from reasonlab.config.limits import shown
from reasonlab.config.strict_yaml import parse_yaml
from reasonlab.core.errors import ConfigError

NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {shown(text)}: expected key.sub=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"--set {shown(text)}: empty key")
    try:
        value = parse_yaml(raw, f"--set {shown(text)}") if raw.strip() else ""
    except ConfigError as error:
        if "malformed YAML" not in str(error):
            raise  # a duplicated key or an alias bomb in the value
        value = raw
    if isinstance(value, str) and NUMBER.match(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e3" as text
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``--set`` texts (``key.sub=value``, the value read as YAML) to ``data``."""
    for text in overrides:
        path, value = parse_override(text)
        set_key(data, path, value, f"--set {shown(text)}")
    return data


def set_key(data: dict[str, Any], path: list[str], value: Any, where: str) -> dict[str, Any]:
    """``data[path[0]][path[1]]... = value`` with typed values (None stays None), making
    sections on the way; ``where`` names the source in errors. A mapping set where the data
    holds a mapping merges into it, key by key (recursively), so that the keys it gives replace
    only themselves.

    Setting ``task.kind`` or ``model.kind`` to another kind switches the section's family: the
    keys the new kind does not have are dropped (``--set model.kind=mamba`` on a GPT config
    keeps n_layers and d_model and drops n_heads); the rest of the section stays."""
    if isinstance(value, dict):
        target: Any = data
        for part in path:
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict) or target is None:
            # ``kind`` first: switching a section's kind must not drop the keys given with it.
            for key in sorted(value, key=lambda k: k != "kind"):
                set_key(data, [*path, str(key)], value[key], where)
            return data
    node = data
    for part in path[:-1]:
        if node.get(part) is None:
            node[part] = {}  # an absent or empty section (``train:``) gets its first key
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {part} is not a section")
        node = child
    if len(path) == 2 and path[0] in KIND_SECTIONS and path[1] == "kind":
        _switch_kind(node, path[0], value)
    node[path[-1]] = value
    return data


def _switch_kind(section: dict[str, Any], name: str, kind: Any) -> None:
    base, default = KIND_SECTIONS[name]
    cls = base.registry.get(kind) if isinstance(kind, str) else None  # type: ignore[attr-defined]
    if cls is None or section.get("kind", default) == kind:
        return  # an unknown kind is reported when the config is validated
    for key in [key for key in section if key not in cls.model_fields]:
        del section[key]
