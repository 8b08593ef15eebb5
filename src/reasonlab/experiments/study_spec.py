"""A ready study's spec, read from its YAML: variants x presets, seeds, scale axes, the
paper's numbers; and the resolved config of every (variant, seed).

The YAML files live in the ``reasonlab/studies`` folder beside the studies' analyses; they are
read here as data (no import of ``reasonlab.studies``), so that sweeps and the study runner sit
below the studies. Fields: ``name``, ``description``, ``presets`` (cpu, paper: config mappings)
or ``presets_from`` another study with ``preset_changes`` (preset -> {dotted key: value}),
``variants`` (name -> {dotted key: value}), ``scale`` (dotted key -> factors: every variant
again at the preset's value times each factor), ``seeds``, ``headline`` (label -> probe),
``stages`` (probes whose per-stage scores get a figure of their own), ``roles`` (what a variant
stands for in the study's analysis -> its name), ``preset_variants`` (preset -> the variants it
runs, where it runs fewer than all: a cpu preset that keeps to the variants its claims compare;
a list of names, or names -> settings that the variant takes in that preset only),
``analysis`` (the analysis run after training) and ``paper`` (source and rows shown beside ours).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonlab.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    read_yaml,
    set_key,
)
from reasonlab.reporting.content import StageCurves

# The ready studies' YAML files (package data of reasonlab/studies).
STUDY_DIR = Path(__file__).resolve().parents[1] / "studies"


@dataclass
class StudySpec:
    name: str
    description: str
    variants: dict[str, dict[str, Any]]
    presets: dict[str, dict[str, Any]]
    headline: dict[str, str] = field(default_factory=dict)
    stages: StageCurves | None = None
    # role -> variant: the variants that the analysis compares by what they stand for (e.g.
    # {transformer_short: gpt-L20}), so that its code names no variant
    roles: dict[str, str] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    analysis: str | None = None  # the study's analysis, run after training (reasonlab.studies)
    seeds: int = 1  # seeds per variant when --seeds is not given
    # final accuracy against a config knob (studies/knob_curves.py): x, series, where, label
    curves: list[dict[str, Any]] = field(default_factory=list)
    # scale axes: dotted key -> factors; each variant also runs with the preset's value at that
    # key times each factor (cot-pattern: entities, relations per entity, width)
    scale: dict[str, list[float]] = field(default_factory=dict)
    # preset -> the variants it runs, each with the settings it takes in that preset only (a
    # preset not named runs every variant with its own settings)
    preset_variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def variants_for(self, preset: str) -> dict[str, dict[str, Any]]:
        """Variant name -> settings for a preset: the YAML's variants and, per scale axis and
        factor, each variant at the preset's value times the factor (named
        ``VARIANT-AXIS-xFACTOR``; a width stays a multiple of the heads). Factors apply to
        the preset's values; ``--set`` on an axis's key sets it in every run, collapsing it.
        A preset listed in ``preset_variants`` runs only the variants it lists, in its order
        (longest first, so that with --jobs the runs end at about the same time), each with the
        preset's own settings for it on top of the variant's."""
        chosen = self.preset_variants.get(preset)
        if chosen is None:
            chosen = {name: {} for name in self.variants}
        variants = {name: {**self.variants[name], **extra} for name, extra in chosen.items()}
        for name, settings in list(variants.items()):
            data = self.variant_data(preset, name, settings)
            for key, factors in self.scale.items():
                for factor in factors:
                    value = _scaled(data, key, factor)
                    variants[f"{name}-{key.split('.')[-1]}-x{factor:g}"] = {**settings, key: value}
        return variants

    def variant_data(self, preset: str, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        """A copy of the preset's config data with a variant's settings (YAML types kept)."""
        data = copy.deepcopy(self.presets[preset])
        for key, value in settings.items():
            set_key(data, key.split("."), copy.deepcopy(value), f"study {self.name}, {name}")
        return data


def _scaled(data: dict[str, Any], key: str, factor: float) -> int:
    section, field_name = key.split(".")
    value = round(data[section][field_name] * factor)
    if key == "model.d_model":  # a width the heads divide
        heads = data["model"].get("n_heads", 1)
        value = max(heads, round(value / heads) * heads)
    return value


def _presets(data: dict[str, Any], raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A study's own presets, or another study's (``presets_from``) with ``preset_changes``
    (preset -> {dotted key: value}) applied, e.g. the paper's longer noise runs."""
    if "presets" in data:
        return data["presets"]
    presets = copy.deepcopy(raw[data["presets_from"]]["presets"])
    for preset, changes in (data.get("preset_changes") or {}).items():
        for key, value in changes.items():
            set_key(presets[preset], key.split("."), value, f"study {data['name']}, {preset}")
    return presets


def _roles(data: dict[str, Any]) -> dict[str, str]:
    """The study's roles, each naming one of its variants."""
    roles = dict(data.get("roles") or {})
    for role, variant in roles.items():
        if variant not in data["variants"]:
            raise ConfigError(f"study {data['name']}: roles.{role}: no variant {variant!r}")
    return roles


def _preset_variants(data: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The presets that run a subset of the variants (a list of names, or names -> the settings
    each takes in that preset only), each name checked."""
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    for preset, listed in (data.get("preset_variants") or {}).items():
        where = f"study {data['name']}: preset_variants.{preset}"
        if isinstance(listed, dict):
            named = {str(n): dict(extra or {}) for n, extra in listed.items()}
        elif isinstance(listed, list):
            named = {str(n): {} for n in listed}
        else:
            raise ConfigError(f"{where}: give a list of variants or variant -> settings")
        unknown = [n for n in named if n not in data["variants"]]
        if unknown:
            raise ConfigError(f"{where}: no variant {unknown[0]!r}")
        chosen[str(preset)] = named
    return chosen


CLAIMS_REGISTRY = "claims.yaml"  # beside the studies' YAML files; read by studies/claims.py


def load_studies(folder: Path = STUDY_DIR) -> dict[str, StudySpec]:
    """Every study YAML in ``folder`` by its name (``claims.yaml`` there is the registry of the
    papers' claims, not a study)."""
    files = sorted(p for p in folder.glob("*.yaml") if p.name != CLAIMS_REGISTRY)
    raw = {data["name"]: data for data in map(read_yaml, files)}
    studies = {}
    for name, data in raw.items():
        stages = data.get("stages")
        studies[name] = StudySpec(
            name=name,
            description=data.get("description", ""),
            variants=data["variants"],
            presets=_presets(data, raw),
            headline=data.get("headline", {}),
            stages=None if stages is None else StageCurves(stages["title"], list(stages["probes"])),
            roles=_roles(data),
            paper=data.get("paper", {}),
            analysis=data.get("analysis"),
            seeds=int(data.get("seeds", 1)),
            curves=list(data.get("curves") or []),
            scale=dict(data.get("scale") or {}),
            preset_variants=_preset_variants(data),
        )
    return studies


STUDIES: dict[str, StudySpec] = load_studies()


def study_configs(
    spec: StudySpec, preset: str, seeds: int, overrides: list[str] | None = None
) -> dict[str, RunConfig]:
    """Run name -> resolved config, for every variant and seed. A variant's settings keep their
    YAML types (``null`` stays None); ``--set`` overrides apply to every run after them."""
    if preset not in spec.presets:
        raise ConfigError(
            f"--preset: {preset!r} is not a preset of {spec.name} ({', '.join(spec.presets)})"
        )
    if seeds < 1:
        raise ConfigError("--seeds: must be at least 1")
    configs = {}
    for variant, settings in spec.variants_for(preset).items():
        for seed in range(seeds):
            data = apply_overrides(
                spec.variant_data(preset, variant, settings), list(overrides or [])
            )
            task, train = data.setdefault("task", {}), data.setdefault("train", {})
            task["seed"] = int(task.get("seed", 0)) + seed
            train["seed"] = int(train.get("seed", 0)) + seed
            name = f"{variant}-s{seed}"
            data["name"] = f"{spec.name}/{name}"
            configs[name] = config_from_dict(data)
    return configs
