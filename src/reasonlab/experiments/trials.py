"""How one trial (a run of a study or a sweep) is planned and trained: train a new run, skip a
completed one, resume a stopped one, refuse a folder that holds a different run; in this
process or in a pool of spawned worker processes, each with its share of the CPU threads."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError, RunConfig
from reasonlab.core.files import interrupt_on_sigterm
from reasonlab.runs.folder import RunDir


def same_run(a: RunConfig, b: RunConfig) -> bool:
    """Same task, model, training and evaluation (the name and logging may differ)."""
    return a.model_dump(exclude={"name", "log"}) == b.model_dump(exclude={"name", "log"})


def plan_run(config: RunConfig, run_dir: Path) -> str:
    """What to do with one run folder: train, skip or resume; a folder holding a different run
    is refused."""
    run = RunDir(run_dir)
    if not run.config_path.exists():
        return "training"
    if not same_run(run.load_config(), config):
        raise ConfigError(f"{run_dir}: holds a run with a different config; use another --out")
    if (run.summary() or {}).get("status") == "completed":
        return "skipped (completed)"
    steps = run.checkpoint_steps()
    return f"resuming at step {steps[-1] if steps else 0}"


def train_or_reuse(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Trains a new run, returns a completed one's summary, or resumes a stopped one."""
    from reasonlab.training.loop import train

    run = RunDir(run_dir)
    if not run.config_path.exists():
        return train(config, run_dir)
    summary = run.summary() or {}
    if summary.get("status") == "completed":
        return summary
    return train(run.load_config(), run_dir, resume=True)


def train_trial(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """``train_or_reuse``, with a failure returned as {status: failed, error} (the run folder's
    summary records it too) instead of raised: one trial's failure stops no other."""
    try:
        return train_or_reuse(config, run_dir)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # any failure of one trial is that trial's result
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"status": "failed", "error": f"{type(exc).__name__}: {message}"}


def start_worker(threads: int) -> None:
    """Initializer of a worker process: its share of the CPU threads (not all of them each), and
    SIGTERM stops its run as Ctrl-C would (the run is saved as interrupted, resumable)."""
    import torch

    torch.set_num_threads(threads)
    interrupt_on_sigterm()


def _train_in_worker(config: RunConfig, run_dir: Path, isolate: bool) -> dict[str, Any]:
    """A worker's run: ``train_trial`` (isolate) or ``train_or_reuse``; on Ctrl-C or SIGTERM the
    run is saved as interrupted and the worker ends rather than go on to a queued run."""
    try:
        return (train_trial if isolate else train_or_reuse)(config, run_dir)
    except KeyboardInterrupt:
        sys.stdout.flush()
        os._exit(130)


class LocalRunner:
    """Trains runs in this process (jobs = 1) or in a pool of spawned processes, each with its
    share of the CPU threads; spawned, not forked, so that a worker can start CUDA and its own
    thread pools. ``isolate``: a failing run becomes a failed result instead of an error."""

    def __init__(self, jobs: int, isolate: bool = False) -> None:
        self.isolate = isolate
        self.pool: ProcessPoolExecutor | None = None
        if jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            self.pool = ProcessPoolExecutor(
                jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=start_worker,
                initargs=(threads,),
            )

    @property
    def parallel(self) -> bool:
        return self.pool is not None

    def submit(self, config: RunConfig, run_dir: Path) -> Future[dict[str, Any]]:
        if self.pool is not None:
            return self.pool.submit(_train_in_worker, config, run_dir, self.isolate)
        done: Future[dict[str, Any]] = Future()
        done.set_result((train_trial if self.isolate else train_or_reuse)(config, run_dir))
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
