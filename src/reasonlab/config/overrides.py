"""``--set key.sub=value`` overrides: parsed (the value read as YAML) and applied to a config's
data before it is validated; setting ``task.kind`` or ``model.kind`` switches the section's kind."""

from __future__ import annotations

import re
from typing import Any

import yaml

from reasonlab.config.base import KIND_SECTIONS
from reasonlab.core.errors import ConfigError

NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and NUMBER.match(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e3" as text
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``--set`` texts (``key.sub=value``, the value read as YAML) to ``data``."""
    for text in overrides:
        path, value = parse_override(text)
        set_key(data, path, value, f"--set {text!r}")
    return data


def set_key(data: dict[str, Any], path: list[str], value: Any, where: str) -> dict[str, Any]:
    """``data[path[0]][path[1]]... = value`` with typed values (None stays None), making
    sections on the way; ``where`` names the source in errors.

    Setting ``task.kind`` or ``model.kind`` to another kind switches the section's family: the
    keys the new kind does not have are dropped (``--set model.kind=mamba`` on a GPT config
    keeps n_layers and d_model and drops n_heads); the rest of the section stays."""
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
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
