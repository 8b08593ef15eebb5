"""Ready studies: a YAML file each (variants x presets, the paper's numbers) and one runner.

A study expands to one RunConfig per (variant, seed); runs go to ``OUT/runs/NAME`` and are trained
one after the other (or ``jobs`` at a time, each in a process of its own: many small runs share a
GPU well). A run that already completed with the same config is reused, one that stopped
is resumed, and a folder holding a different run is refused; so re-running a study after an
interruption continues where it stopped, saying for each run "training", "skipped (completed)"
or "resuming at step N". ``OUT/summary.json`` (study, preset, seeds, overrides, status, wall_s,
runs) is rewritten after every run; the study folder is locked while the study runs.

A study's YAML: ``name``, ``description``, ``presets`` (cpu, paper: config mappings) or
``presets_from`` another study with ``preset_changes`` (preset -> {dotted key: value}),
``variants`` (name -> {dotted key: value}), ``scale`` (dotted key -> factors: every variant
again at the preset's value times each factor), ``seeds``, ``headline`` (label -> probe),
``analysis`` (a module here, run after training; ``knob_curves`` plots the ``curves`` it lists)
and ``paper`` (source and rows shown beside ours).
"""

from __future__ import annotations

import copy
import importlib
import shutil
import time
from concurrent.futures import Future
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
from reasonlab.io import make_dir, read_json, write_json
from reasonlab.runs import RunDir, hold_lock
from reasonlab.sweep import LocalRunner, plan_run, same_run

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
    seeds: int = 1  # seeds per variant when --seeds is not given
    # final accuracy against a config knob (studies/knob_curves.py): x, series, where, label
    curves: list[dict[str, Any]] = field(default_factory=list)
    # scale axes: dotted key -> factors; each variant also runs with the preset's value at that
    # key times each factor (cot-pattern: entities, relations per entity, width)
    scale: dict[str, list[float]] = field(default_factory=dict)

    def variants_for(self, preset: str) -> dict[str, dict[str, Any]]:
        """Variant name -> settings for a preset: the YAML's variants and, per scale axis and
        factor, each variant at the preset's value times the factor (named
        ``VARIANT-AXIS-xFACTOR``; a width stays a multiple of the heads). Factors apply to
        the preset's values; ``--set`` on an axis's key sets it in every run, collapsing it."""
        variants = dict(self.variants)
        for name, settings in self.variants.items():
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


def _load_studies() -> dict[str, StudySpec]:
    raw = {data["name"]: data for data in map(read_yaml, sorted(STUDY_DIR.glob("*.yaml")))}
    studies = {}
    for name, data in raw.items():
        studies[name] = StudySpec(
            name=name,
            description=data.get("description", ""),
            variants=data["variants"],
            presets=_presets(data, raw),
            headline=data.get("headline", {}),
            paper=data.get("paper", {}),
            analysis=data.get("analysis"),
            seeds=int(data.get("seeds", 1)),
            curves=list(data.get("curves") or []),
            scale=dict(data.get("scale") or {}),
        )
    return studies


STUDIES: dict[str, StudySpec] = _load_studies()


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


def _copy_completed(source: Path, config: RunConfig, run_dir: Path) -> bool:
    """Copies a completed run with the same config from another study folder, if there is one."""
    run = RunDir(source)
    if run_dir.exists() or not run.config_path.exists():
        return False
    if (run.summary() or {}).get("status") != "completed" or not same_run(
        run.load_config(), config
    ):
        return False
    shutil.copytree(source, run_dir)
    return True


def _check_study_folder(out: Path, name: str, preset: str) -> dict[str, Any] | None:
    """The folder's previous study summary (None for a new folder); refuses a file, another
    study's folder and a folder holding something else."""
    summary_path = out / "summary.json"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a folder")
    if summary_path.exists():
        previous = read_json(summary_path)
        if not isinstance(previous, dict) or (previous.get("study"), previous.get("preset")) != (
            name,
            preset,
        ):
            raise ConfigError(f"--out {out}: holds another study; choose another folder")
        return previous
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not a study folder; choose another folder")
    return None


def run_study(
    name: str,
    preset: str = "cpu",
    seeds: int | None = None,
    out: str | Path = "runs/study",
    overrides: list[str] | None = None,
    reuse: str | Path | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Trains (or skips, or resumes) every run of a study, then its analysis and its report.
    Running it again continues where it stopped: completed runs are skipped, stopped ones
    resumed. The study folder is locked while this runs. ``jobs`` > 1 trains that many runs at
    once, each in a fresh (spawned) process with its share of the CPU threads; the summary still
    lists the runs in the study's order."""
    if jobs < 1:
        raise ConfigError("--jobs: must be at least 1")
    if name not in STUDIES:
        raise ConfigError(f"NAME: unknown study {name!r} (known: {', '.join(STUDIES)})")
    spec = STUDIES[name]
    seeds = spec.seeds if seeds is None else seeds
    configs = study_configs(spec, preset, seeds, overrides)
    out = Path(out)
    previous = _check_study_folder(out, name, preset) or {}
    make_dir(out / "runs")
    with hold_lock(out, "study folder"):
        plan = {run_name: plan_run(c, out / "runs" / run_name) for run_name, c in configs.items()}
        runner = LocalRunner(jobs)
        try:
            result = _run_planned(
                spec, preset, seeds, out, overrides, reuse, configs, plan, previous, runner
            )
        except BaseException:
            runner.close(stop_workers=True)
            raise
        runner.close()
        return result


def _run_planned(
    spec: StudySpec,
    preset: str,
    seeds: int,
    out: Path,
    overrides: list[str] | None,
    reuse: str | Path | None,
    configs: dict[str, RunConfig],
    plan: dict[str, str],
    previous: dict[str, Any],
    runner: LocalRunner,
) -> dict[str, Any]:
    from reasonlab.report import write_study_report

    summary_path = out / "summary.json"
    result: dict[str, Any] = {
        "study": spec.name,
        "preset": preset,
        "seeds": seeds,
        "overrides": list(overrides or []),
        "status": "running",
        "runs": {},
    }
    wall_before = float(previous.get("wall_s") or 0.0)
    started = time.perf_counter()

    def save(status: str) -> None:
        result["status"] = status
        result["wall_s"] = round(wall_before + time.perf_counter() - started, 3)
        write_json(summary_path, result)

    save("running")  # marks the folder as this study's before any run can fail
    status, sections = "failed", []
    try:
        # With one job, submit trains at once: each run's line comes just before its training,
        # and each run is in summary.json as soon as it finished.
        pending: dict[str, Future[dict[str, Any]]] = {}

        def record(run_name: str) -> None:
            summary = pending[run_name].result()
            config = configs[run_name].model_dump(mode="json")
            result["runs"][run_name] = {**summary, "config": config}
            save("running")

        for run_name, config in configs.items():
            run_dir = out / "runs" / run_name
            action = plan[run_name]
            if (
                action == "training"
                and reuse is not None
                and _copy_completed(Path(reuse) / "runs" / run_name, config, run_dir)
            ):
                action = f"reused from {reuse}"
            print(f"[{spec.name}] {run_name}: {action}", flush=True)
            pending[run_name] = runner.submit(config, run_dir)
            if not runner.parallel:
                record(run_name)
        for run_name in configs:
            if run_name not in result["runs"]:
                record(run_name)
        if spec.analysis is not None:
            module = importlib.import_module(f"reasonlab.studies.{spec.analysis}")
            result["analysis"], sections = module.analyze(out, result)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        save(status)
    write_study_report(out, spec, result, sections)
    return result
