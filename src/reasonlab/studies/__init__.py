"""Ready studies: a YAML file each (variants x presets, the paper's numbers) and one runner.

A study expands to one RunConfig per (variant, seed); runs go to ``OUT/runs/NAME`` and are trained
one after the other. A run that already completed with the same config is reused, one that stopped
is resumed, and a folder holding a different run is refused; so re-running a study after an
interruption continues where it stopped. ``OUT/summary.json`` is rewritten after every run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError, RunConfig, apply_overrides, config_from_dict, read_yaml
from reasonlab.runs import RunDir, read_json, write_json

STUDY_DIR = Path(__file__).parent


@dataclass
class StudySpec:
    name: str
    description: str
    variants: dict[str, dict[str, Any]]
    presets: dict[str, dict[str, Any]]
    headline: dict[str, str] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)


def load_study(path: Path) -> StudySpec:
    data = read_yaml(path)
    return StudySpec(
        name=data["name"],
        description=data.get("description", ""),
        variants=data["variants"],
        presets=data["presets"],
        headline=data.get("headline", {}),
        paper=data.get("paper", {}),
    )


STUDIES: dict[str, StudySpec] = {
    spec.name: spec for spec in (load_study(p) for p in sorted(STUDY_DIR.glob("*.yaml")))
}


def study_configs(
    spec: StudySpec, preset: str, seeds: int, overrides: list[str] | None = None
) -> dict[str, RunConfig]:
    """Run name -> resolved config, for every variant and seed."""
    if preset not in spec.presets:
        raise ConfigError(
            f"--preset: {preset!r} is not a preset of {spec.name} ({', '.join(spec.presets)})"
        )
    if seeds < 1:
        raise ConfigError("--seeds: must be at least 1")
    configs = {}
    for variant, settings in spec.variants.items():
        for seed in range(seeds):
            data = copy.deepcopy(spec.presets[preset])
            data = apply_overrides(data, [f"{k}={v}" for k, v in settings.items()])
            data = apply_overrides(data, list(overrides or []))
            task, train = data.setdefault("task", {}), data.setdefault("train", {})
            task["seed"] = int(task.get("seed", 0)) + seed
            train["seed"] = int(train.get("seed", 0)) + seed
            name = f"{variant}-s{seed}"
            data["name"] = f"{spec.name}/{name}"
            configs[name] = config_from_dict(data)
    return configs


def _train_or_reuse(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    from reasonlab.train import train

    run = RunDir(run_dir)
    if not run.config_path.exists():
        return train(config, run_dir)
    existing = run.load_config()
    if existing.model_dump(exclude={"log"}) != config.model_dump(exclude={"log"}):
        raise ConfigError(f"{run_dir}: holds a run with a different config; use another --out")
    summary = run.summary() or {}
    if summary.get("status") == "completed":
        return summary
    return train(existing, run_dir, resume=True)


def run_study(
    name: str,
    preset: str = "cpu",
    seeds: int = 1,
    out: str | Path = "runs/study",
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    from reasonlab.report import write_study_report

    if name not in STUDIES:
        raise ConfigError(f"NAME: unknown study {name!r} (known: {', '.join(STUDIES)})")
    spec = STUDIES[name]
    configs = study_configs(spec, preset, seeds, overrides)
    out = Path(out)
    summary_path = out / "summary.json"
    if summary_path.exists():
        previous = read_json(summary_path)
        if not isinstance(previous, dict) or (previous.get("study"), previous.get("preset")) != (
            name,
            preset,
        ):
            raise ConfigError(f"--out {out}: holds another study; choose another folder")
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not a study folder; choose another folder")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"study": name, "preset": preset, "seeds": seeds, "runs": {}}
    for run_name, config in configs.items():
        print(f"[{name}] {run_name}", flush=True)
        summary = _train_or_reuse(config, out / "runs" / run_name)
        result["runs"][run_name] = {**summary, "config": config.model_dump(mode="json")}
        write_json(summary_path, result)
    write_study_report(out, spec, result)
    return result
