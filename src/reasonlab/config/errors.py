"""Config errors in reasonlab's words: a pydantic ValidationError becomes one line that names
the offending field (``model.n_layer: unknown key (did you mean n_layers?)``), with the closest
valid key where one is near."""

from __future__ import annotations

import difflib
import re
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from reasonlab.config.base import ModelConfig, TaskConfig
from reasonlab.config.limits import cut
from reasonlab.config.schema import RunConfig


def section_models(annotation: Any) -> list[type[BaseModel]]:
    """The config classes a field holds: its own, the members of a union, or every registered
    task kind for ``task``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation is TaskConfig:
            return list(TaskConfig.registry.values())
        if annotation is ModelConfig:
            return list(ModelConfig.registry.values())
        return [annotation]
    return [model for arg in get_args(annotation) for model in section_models(arg)]


def models_at(root: type[BaseModel], path: list[str]) -> list[type[BaseModel]]:
    """The config classes of the section at ``path`` below ``root`` (none: not a section)."""
    models = [root]
    for part in path:
        fields = [model.model_fields[part] for model in models if part in model.model_fields]
        models = [model for field in fields for model in section_models(field.annotation)]
    return models


def key_paths(root: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every leaf key below ``root`` (default RunConfig), dotted: name, task.kind, ..."""
    paths: dict[str, None] = {}
    for name, field in (root or RunConfig).model_fields.items():
        path = f"{prefix}{name}"
        sections = section_models(field.annotation)
        if not sections:
            paths[path] = None
        for section in sections:
            paths.update(dict.fromkeys(key_paths(section, path + ".")))
    return list(paths)


def _unknown_key(root: type[BaseModel], section: list[str], key: str) -> str:
    """'unknown key' and the closest valid key: in the same section, else the same name in
    another section, else the section's keys."""
    models = models_at(root, section)
    keys = list(dict.fromkeys(name for model in models for name in model.model_fields))
    close = difflib.get_close_matches(key[:100], keys, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    elsewhere = [path for path in key_paths() if path.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return f"unknown key (did you mean {' or '.join(elsewhere)}?)"
    where = f"keys of {'.'.join(section)}" if section else "top-level keys"
    return f"unknown key ({where}: {', '.join(keys)})"


def section_not_a_mapping(path: str, models: list[type[BaseModel]], value: Any) -> str:
    """A section given a value (``--set train=5``): say it is a section and how to set a key."""
    example = next(
        (
            f"{path}.{name}={field.default}"
            for model in models
            for name, field in model.model_fields.items()
            if name not in ("kind", "seed") and isinstance(field.default, (bool, int, float, str))
        ),
        f"{path}.KEY=VALUE",
    )
    if value is None:
        return f"{path}: is an empty section; leave it out or set a key in it (e.g. {example})"
    return f"{path}: is a section, not a value; set a key in it (e.g. --set {example})"


def format_validation_error(
    error: ValidationError, prefix: str = "", root: type[BaseModel] | None = None
) -> str:
    """One line naming the field: pydantic's first error, in reasonlab's words. ``root`` is the
    class validated (default RunConfig) and ``prefix`` its path in the config. A user's text
    in it (an unknown key, a value quoted) is cut to a couple of hundred characters."""
    root = root or RunConfig
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    location = ".".join(filter(None, [prefix, *(cut(part, 80) for part in loc)]))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = _unknown_key(root, loc[:-1], loc[-1])
    elif first["type"] == "model_type" and models_at(root, loc):
        return section_not_a_mapping(location, models_at(root, loc), first.get("input"))
    else:
        # Cross-field validators start their message with the field they blame: "n_heads: ...".
        field_named = re.match(r"^([a-z_]+): (.*)$", message)
        if field_named:
            location = ".".join(filter(None, [location, field_named.group(1)]))
            message = field_named.group(2)
        message = re.sub(r" or instance of \w+", "", message)  # no internal class names
    extra = len(error.errors()) - 1
    more = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
    return f"{location or 'config'}: {cut(message, 400)}{more}"
