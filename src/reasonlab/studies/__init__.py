"""Ready studies: a YAML file each (variants x presets, the paper's numbers) and one runner.

A study expands to one RunConfig per (variant, seed); runs go to ``OUT/runs/NAME`` and are trained
one after the other (or ``jobs`` at a time, each in a process of its own: many small runs share a
GPU well). A run that already completed with the same config is reused, one that stopped
is resumed, and a folder holding a different run is refused; so re-running a study after an
interruption continues where it stopped, saying for each run "training", "skipped (completed)"
or "resuming at step N". ``OUT/summary.json`` (study, preset, seeds, overrides, status, wall_s,
runs) is rewritten after every run; the study folder is locked while the study runs.
"""

from __future__ import annotations

import copy
import importlib
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
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
from reasonlab.io import interrupt_on_sigterm, make_dir, read_json, write_json
from reasonlab.runs import RunDir, hold_lock

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
    """Run name -> resolved config, for every variant and seed. A variant's settings keep their
    YAML types (``null`` stays None); ``--set`` overrides apply to every run after them."""
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
            for key, value in settings.items():
                where = f"study {spec.name}, variant {variant}, {key}"
                set_key(data, key.split("."), copy.deepcopy(value), where)
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


def _plan(config: RunConfig, run_dir: Path) -> str:
    """What the study will do with one run folder: train, skip or resume; a folder holding a
    different run is refused before any run starts."""
    run = RunDir(run_dir)
    if not run.config_path.exists():
        return "training"
    if not _same_run(run.load_config(), config):
        raise ConfigError(f"{run_dir}: holds a run with a different config; use another --out")
    if (run.summary() or {}).get("status") == "completed":
        return "skipped (completed)"
    steps = run.checkpoint_steps()
    return f"resuming at step {steps[-1] if steps else 0}"


def _train_or_reuse(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    from reasonlab.train import train

    run = RunDir(run_dir)
    if not run.config_path.exists():
        return train(config, run_dir)
    summary = run.summary() or {}
    if summary.get("status") == "completed":
        return summary
    return train(run.load_config(), run_dir, resume=True)


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
    seeds: int = 1,
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
    configs = study_configs(spec, preset, seeds, overrides)
    out = Path(out)
    previous = _check_study_folder(out, name, preset) or {}
    make_dir(out / "runs")
    with hold_lock(out, "study folder"):
        plan = {run_name: _plan(c, out / "runs" / run_name) for run_name, c in configs.items()}
        runner = _Runner(jobs)
        try:
            result = _run_planned(
                spec, preset, seeds, out, overrides, reuse, configs, plan, previous, runner
            )
        except BaseException:
            runner.close(stop_workers=True)
            raise
        runner.close()
        return result


def _start_worker(threads: int) -> None:
    """Initializer of a worker process: its share of the CPU threads (not all of them each), and
    SIGTERM stops its run as Ctrl-C would (the run is saved as interrupted, resumable)."""
    import torch

    torch.set_num_threads(threads)
    interrupt_on_sigterm()


def _train_in_worker(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    try:
        return _train_or_reuse(config, run_dir)
    except KeyboardInterrupt:
        # The run is saved as interrupted; the worker must not go on to a run already queued.
        sys.stdout.flush()
        os._exit(130)


class _Runner:
    """Trains runs in this process (jobs = 1) or in a pool of spawned processes; spawned, not
    forked, so that a worker can start CUDA and its own thread pools."""

    def __init__(self, jobs: int) -> None:
        self.pool: ProcessPoolExecutor | None = None
        if jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            self.pool = ProcessPoolExecutor(
                jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(threads,),
            )

    def submit(self, config: RunConfig, run_dir: Path) -> Future[dict[str, Any]]:
        if self.pool is not None:
            return self.pool.submit(_train_in_worker, config, run_dir)
        done: Future[dict[str, Any]] = Future()
        done.set_result(_train_or_reuse(config, run_dir))
        return done

    def close(self, stop_workers: bool = False) -> None:
        """Waits for the workers, or (after an error or a SIGTERM, which reaches this process
        only) ends them: their runs stay resumable from their last checkpoint."""
        if self.pool is None:
            return
        if stop_workers:
            for process in list(self.pool._processes.values()):  # no public way to end them
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


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
    runner: _Runner,
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
            if runner.pool is None:
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
