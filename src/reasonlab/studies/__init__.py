"""Ready studies: a YAML file each (variants x presets, the paper's numbers) and one runner.

A study expands to one RunConfig per (variant, seed); runs go to ``OUT/runs/NAME`` and are trained
one after the other. A run that already completed with the same config is reused, one that stopped
is resumed, and a folder holding a different run is refused; so re-running a study after an
interruption continues where it stopped. ``OUT/summary.json`` is rewritten after every run.
"""

from __future__ import annotations

import copy
import importlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError, RunConfig, apply_overrides, config_from_dict, read_yaml
from reasonlab.io import make_dir, read_json, write_json
from reasonlab.runs import RunDir

STUDY_DIR = Path(__file__).parent


@dataclass
class StudySpec:
    name: str
    description: str
    variants: dict[str, dict[str, Any]]
    presets: dict[str, dict[str, Any]]
    headline: dict[str, str] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    analysis: str | None = None  # a module in reasonlab.studies run after training


def _load_studies() -> dict[str, StudySpec]:
    raw = {data["name"]: data for data in map(read_yaml, sorted(STUDY_DIR.glob("*.yaml")))}
    studies = {}
    for name, data in raw.items():
        presets = data.get("presets") or raw[data["presets_from"]]["presets"]
        studies[name] = StudySpec(
            name=name,
            description=data.get("description", ""),
            variants=data["variants"],
            presets=presets,
            headline=data.get("headline", {}),
            paper=data.get("paper", {}),
            analysis=data.get("analysis"),
        )
    return studies


STUDIES: dict[str, StudySpec] = _load_studies()


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


def _same_run(a: RunConfig, b: RunConfig) -> bool:
    """Same task, model, training and evaluation (the name and logging may differ)."""
    return a.model_dump(exclude={"name", "log"}) == b.model_dump(exclude={"name", "log"})


def _copy_completed(source: Path, config: RunConfig, run_dir: Path) -> bool:
    """Copies a completed run with the same config from another study folder, if there is one."""
    run = RunDir(source)
    if run_dir.exists() or not run.config_path.exists():
        return False
    if (run.summary() or {}).get("status") != "completed" or not _same_run(
        run.load_config(), config
    ):
        return False
    shutil.copytree(source, run_dir)
    return True


def _train_or_reuse(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    from reasonlab.train import train

    run = RunDir(run_dir)
    if not run.config_path.exists():
        return train(config, run_dir)
    existing = run.load_config()
    if not _same_run(existing, config):
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
    reuse: str | Path | None = None,
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
    make_dir(out / "runs")
    result: dict[str, Any] = {"study": name, "preset": preset, "seeds": seeds, "runs": {}}
    if not summary_path.exists():  # marks the folder as this study's before any run can fail
        write_json(summary_path, result)
    for run_name, config in configs.items():
        print(f"[{name}] {run_name}", flush=True)
        if reuse is not None and _copy_completed(
            Path(reuse) / "runs" / run_name, config, out / "runs" / run_name
        ):
            print(f"[{name}] {run_name}: reused from {reuse}", flush=True)
        summary = _train_or_reuse(config, out / "runs" / run_name)
        result["runs"][run_name] = {**summary, "config": config.model_dump(mode="json")}
        write_json(summary_path, result)
    sections: list[str] = []
    if spec.analysis is not None:
        module = importlib.import_module(f"reasonlab.studies.{spec.analysis}")
        result["analysis"], sections = module.analyze(out, result)
        write_json(summary_path, result)
    write_study_report(out, spec, result, sections)
    return result
