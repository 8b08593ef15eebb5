"""Loading a config: a YAML file read, ``--set`` overrides applied, every section validated,
and any error raised as one ``ConfigError`` line that names the field or the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reasonlab.config.base import KIND_SECTIONS
from reasonlab.config.errors import format_validation_error, models_at, section_not_a_mapping
from reasonlab.config.limits import shown
from reasonlab.config.overrides import apply_overrides
from reasonlab.config.schema import RunConfig
from reasonlab.config.strict_yaml import parse_yaml
from reasonlab.core.errors import ConfigError


def kind_section_from_dict(section: str, data: Any) -> Any:
    """The ``task`` or ``model`` section: the class registered for its ``kind``, validated, with
    errors named by their path in the config (``model.d_state: ...``)."""
    base, default = KIND_SECTIONS[section]
    if data is None and section == "task":
        data = {}  # ``task:`` alone has always meant the default task
    if not isinstance(data, dict):
        raise ConfigError(section_not_a_mapping(section, models_at(RunConfig, [section]), data))
    kind = data.get("kind", default)
    cls = base.registry.get(kind) if isinstance(kind, str) else None  # type: ignore[attr-defined]
    if cls is None:
        known = ", ".join(sorted(base.registry))  # type: ignore[attr-defined]
        raise ConfigError(f"{section}.kind: unknown {section} kind {shown(kind)} (known: {known})")
    for key in data:
        owners = [k for k, c in base.registry.items() if key in c.model_fields]  # type: ignore[attr-defined]
        if key not in cls.model_fields and owners:
            raise ConfigError(
                f"{section}.{key}: a key of {section}.kind {' or '.join(owners)}, not of {kind} "
                f"(its keys: {', '.join(k for k in cls.model_fields if k != 'kind')})"
            )
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix=section, root=cls)) from None


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from a config's data (sections as mappings), validated section by section."""
    data = dict(data)
    for section in KIND_SECTIONS:
        if section in data:
            data[section] = kind_section_from_dict(section, data[section])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping of sections; an empty file is an empty mapping. A key given
    twice, an alias bomb or malformed YAML is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except (PermissionError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read ({type(error).__name__})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (task, model, ...)")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The RunConfig of a YAML file (none: every default) with ``--set`` overrides applied."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides or []))
