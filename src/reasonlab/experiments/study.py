"""Running a ready study: every (variant, seed) trained, skipped or resumed into
``OUT/runs/NAME``, then the study's analysis and its report, both handed in by the caller
(``reasonlab.studies``), so that this layer knows no study and no report format.

Runs are trained one after the other (or ``jobs`` at a time, each in a process of its own). A run
that already completed with the same config is reused, one that stopped is resumed, and a folder
holding a different run is refused; so re-running a study after an interruption continues where
it stopped, saying for each run "training", "skipped (completed)" or "resuming at step N".
With ``pack`` (``--pack auto|off|K``, ``trials.plan_packs``) compatible runs train together as one
batched model (``training/pack.py``), each still into its own run folder; auto is off on a CPU.
``OUT/summary.json`` (``StudyResult``: study, preset, seeds, overrides, status, runs, wall_s,
analysis, claims, machine, date) is rewritten after every run; the study folder is locked while
the study runs. The claims are those among the analysis's report items (``Claim``, plain data,
sections walked), each with a stable id: its key, or STUDY-N by its position.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reasonlab.config import ConfigError, RunConfig
from reasonlab.core.files import make_dir, read_json
from reasonlab.experiments.study_spec import STUDIES, StudySpec, study_configs
from reasonlab.experiments.trials import (
    LocalRunner,
    pack_size,
    parse_pack,
    plan_packs,
    plan_run,
    same_run,
)
from reasonlab.reporting.content import claims_in
from reasonlab.runs.folder import RunDir, hold_lock
from reasonlab.runs.summary import RunStatus, RunSummary, StudyClaim, StudyResult, StudyRun

# analyze(study folder, study result) -> (analysis data for summary.json, report items); the
# items go to the report as they are (this layer knows no report format)
Analyze = Callable[[Path, StudyResult], tuple[Any, list[Any]]]
# report(study folder, spec, study result, report items) -> None
Report = Callable[[Path, StudySpec, StudyResult, list[Any]], None]


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record() -> dict[str, Any]:
    """Where a study ran: CPU model, cores, accelerator name (``cpu`` without one), platform."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "device": device,
        "platform": platform.platform(),
    }


def study_claims(study: str, items: list[Any]) -> list[StudyClaim]:
    """The claims among a study's report items, each with its stable id: the claim's key, or
    STUDY-N (N: its position among the study's claims, from 1)."""
    return [
        StudyClaim(
            id=claim.key or f"{study}-{position}",
            text=claim.text,
            verdict=claim.verdict,
            **({"per_seed": claim.per_seed} if claim.per_seed else {}),
        )
        for position, claim in enumerate(claims_in(items), start=1)
    ]


def _copy_completed(source: Path, config: RunConfig, run_dir: Path) -> bool:
    """Copies a completed run with the same config from another study folder, if there is one."""
    run = RunDir(source)
    if run_dir.exists() or not run.config_path.exists():
        return False
    summary = RunSummary.read_if_present(run.summary_path)
    if summary is None or summary.status != "completed" or not same_run(run.load_config(), config):
        return False
    shutil.copytree(source, run_dir)
    return True


def _check_study_folder(out: Path, name: str, preset: str) -> StudyResult | None:
    """The folder's previous study result (None for a new folder); refuses a file, another
    study's folder and a folder holding something else."""
    summary_path = out / "summary.json"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a folder")
    if summary_path.exists():
        try:
            previous = StudyResult.model_validate(read_json(summary_path))
        except ValidationError:  # a run's or a sweep's summary, or no JSON object at all
            previous = None
        if previous is None or (previous.study, previous.preset) != (name, preset):
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
    analyze: Analyze | None = None,
    report: Report | None = None,
    pack: str | int = "auto",
) -> StudyResult:
    """Trains (or skips, or resumes) every run of a study, then its analysis and its report.
    Running it again continues where it stopped: completed runs are skipped, stopped ones
    resumed. The study folder is locked while this runs. ``jobs`` > 1 trains that many runs at
    once, each in a fresh (spawned) process with its share of the CPU threads; the summary still
    lists the runs in the study's order. ``pack`` (auto, off or K) trains compatible runs in
    packs of at most K (``trials.plan_packs``)."""
    if jobs < 1:
        raise ConfigError("--jobs: must be at least 1")
    parse_pack(pack)
    if name not in STUDIES:
        raise ConfigError(f"NAME: unknown study {name!r} (known: {', '.join(STUDIES)})")
    spec = STUDIES[name]
    seeds = spec.seeds if seeds is None else seeds
    configs = study_configs(spec, preset, seeds, overrides)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a folder")
    make_dir(out)
    # The lock first, then the look inside: a study starting at the same instant on this folder
    # is then told the folder is in use, not that it holds something else.
    with hold_lock(out, "study folder"):
        previous = _check_study_folder(out, name, preset)
        make_dir(out / "runs")
        plan = {run_name: plan_run(c, out / "runs" / run_name) for run_name, c in configs.items()}
        packs = plan_packs(configs, pack_size(pack, list(configs.values())))
        runner = LocalRunner(jobs)
        try:
            result = _run_planned(
                spec,
                preset,
                seeds,
                out,
                overrides,
                reuse,
                configs,
                plan,
                packs,
                previous,
                runner,
                analyze,
                report,
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
    packs: list[list[str]],
    previous: StudyResult | None,
    runner: LocalRunner,
    analyze: Analyze | None,
    report: Report | None,
) -> StudyResult:
    summary_path = out / "summary.json"
    result = StudyResult(
        study=spec.name,
        preset=preset,
        seeds=seeds,
        overrides=list(overrides or []),
        status="running",
        runs={},
        machine=machine_record(),
    )
    wall_before = (previous.wall_s if previous else None) or 0.0  # of the runs before
    started = time.perf_counter()

    def save(status: RunStatus) -> None:
        result.status = status
        result.wall_s = round(wall_before + time.perf_counter() - started, 3)
        result.date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        result.write(summary_path)

    save("running")  # marks the folder as this study's before any run can fail
    status: RunStatus = "failed"
    sections: list[Any] = []
    try:
        # With one job, submit trains at once: each run's line comes just before its training,
        # and each run is in summary.json as soon as it finished.
        pending: dict[str, Future[dict[str, Any]]] = {}

        def record(run_name: str) -> None:
            summary = pending[run_name].result()
            config = configs[run_name].model_dump(mode="json")
            source = out / "runs" / run_name / "summary.json"
            result.runs[run_name] = StudyRun.parse({**summary, "config": config}, source)
            save("running")

        for members in packs:
            for run_name in members:
                run_dir, action = out / "runs" / run_name, plan[run_name]
                if (
                    action == "training"
                    and reuse is not None
                    and _copy_completed(Path(reuse) / "runs" / run_name, configs[run_name], run_dir)
                ):
                    action = f"reused from {reuse}"
                packed = f" (pack of {len(members)})" if len(members) > 1 else ""
                print(f"[{spec.name}] {run_name}: {action}{packed}", flush=True)
            if len(members) == 1:
                pending[members[0]] = runner.submit(configs[members[0]], out / "runs" / members[0])
            else:
                futures = runner.submit_pack(
                    [configs[n] for n in members], [out / "runs" / n for n in members]
                )
                pending.update(zip(members, futures, strict=True))
            if not runner.parallel:
                for run_name in members:
                    record(run_name)
        for run_name in configs:
            if run_name not in result.runs:
                record(run_name)
        result.runs = {n: result.runs[n] for n in configs}  # the study's order
        if analyze is not None:
            result.analysis, sections = analyze(out, result)
            result.claims = study_claims(spec.name, sections)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        save(status)
    if report is not None:
        report(out, spec, result, sections)
    return result
