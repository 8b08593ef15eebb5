"""Typed run configuration: RunConfig = task + model + train + eval + log.

Every key has a default, so a YAML file may hold only ``task:``. Unknown keys, wrong types and
impossible values are rejected by pydantic before any work starts; ``ConfigError`` carries a
one-line message that names the offending field (the CLI turns it into exit code 2).

The modules: ``schema`` (RunConfig and its train, eval and log sections; ``base``,
``task_configs`` and ``model_configs`` hold the sections keyed by ``kind``), ``overrides``
(``--set key.sub=value``; a mapping merges into a section), ``errors`` (a validation error in one
line), ``loading`` (YAML file to RunConfig), ``strict_yaml`` (YAML without duplicated keys or
alias bombs), ``limits`` (the bounds of counts and names, and values cut in messages) and
``reference`` (every key with its default and meaning, for the docs).
"""

from __future__ import annotations

from reasonlab.config.base import KIND_SECTIONS, ModelConfig, StrictModel, TaskConfig
from reasonlab.config.errors import key_paths, section_models
from reasonlab.config.loading import (
    config_from_dict,
    kind_section_from_dict,
    load_config,
    read_yaml,
)
from reasonlab.config.model_configs import GPTModelConfig, MambaModelConfig
from reasonlab.config.overrides import apply_overrides, parse_override, set_key
from reasonlab.config.schema import EvalConfig, LogConfig, RunConfig, TrainConfig, tracker_names
from reasonlab.config.task_configs import (
    CopyTaskConfig,
    DPTaskConfig,
    ICLTaskConfig,
    TwoHopTaskConfig,
)
from reasonlab.core.errors import ConfigError

__all__ = [
    "KIND_SECTIONS",
    "ConfigError",
    "CopyTaskConfig",
    "DPTaskConfig",
    "EvalConfig",
    "GPTModelConfig",
    "ICLTaskConfig",
    "LogConfig",
    "MambaModelConfig",
    "ModelConfig",
    "RunConfig",
    "StrictModel",
    "TaskConfig",
    "TrainConfig",
    "TwoHopTaskConfig",
    "apply_overrides",
    "config_from_dict",
    "key_paths",
    "kind_section_from_dict",
    "load_config",
    "parse_override",
    "read_yaml",
    "section_models",
    "set_key",
    "tracker_names",
]
