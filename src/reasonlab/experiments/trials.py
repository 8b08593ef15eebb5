"""How one trial (a run of a study or a sweep) is planned and trained: train a new run, skip a
completed one, resume a stopped one, refuse a folder that holds a different run; in this
process or in a pool of spawned worker processes, each with its share of the CPU threads.

Packing (``--pack auto|off|K``): ``plan_packs`` groups runs that may train as one batched model
(``training.pack.pack_key``: the same model, steps, batch size, device, precision, clipping,
betas and evaluation schedule) into packs of at most K, in the order the runs come; a run with
no partner trains alone. ``train_packed`` then splits a pack further by the model's input shape
(vocabulary, sequence length: known once the tasks are built), skips completed members, packs
the new ones, resumes a killed pack as a pack when its members stand at one step, and resumes
each member alone otherwise. ``auto`` is off on a CPU (packing measured no faster there:
docs/BENCHMARKS.md) and 8 on CUDA."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError, RunConfig
from reasonlab.config.limits import shown
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


PACK_AUTO_CUDA = 8  # the pack size --pack auto takes on CUDA


def parse_pack(value: str | int) -> int | None:
    """``--pack``: None for auto, 1 for off, K >= 1 a pack size; anything else is refused."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text == "off":
        return 1
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1 or size > 4096:
        raise ConfigError(f"--pack: expected auto, off or a pack size 1..4096, got {shown(value)}")
    return size


def pack_size(value: str | int, configs: list[RunConfig]) -> int:
    """The pack size that ``--pack value`` gives for these runs: auto is off on a CPU and
    ``PACK_AUTO_CUDA`` when the runs train on CUDA."""
    size = parse_pack(value)
    if size is not None:
        return size
    import torch

    def on_cuda(device: str) -> bool:
        return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())

    return PACK_AUTO_CUDA if configs and all(on_cuda(c.train.device) for c in configs) else 1


def plan_packs(configs: dict[str, RunConfig], size: int) -> list[list[str]]:
    """The runs (by name) grouped into packs of at most ``size`` runs that share
    ``pack_key``; in the runs' order, a pack placed where its first run is."""
    if size <= 1:
        return [[name] for name in configs]
    from reasonlab.training.pack import pack_key

    groups: dict[str, list[list[str]]] = {}
    packs: list[list[str]] = []
    for name, config in configs.items():
        open_packs = groups.setdefault(pack_key(config), [])
        if not open_packs or len(open_packs[-1]) >= size:
            open_packs.append([])
            packs.append(open_packs[-1])
        open_packs[-1].append(name)
    return packs


def train_packed(configs: list[RunConfig], run_dirs: list[Path]) -> list[dict[str, Any]]:
    """``train_or_reuse`` for the runs of one planned pack: completed members are returned, new
    ones train as packs of one input shape, a killed pack resumes as a pack when its members
    stand at one step (each alone otherwise)."""
    from reasonlab.tasks import build_task
    from reasonlab.training.pack import train_pack

    results: dict[int, dict[str, Any]] = {}
    new, stopped = [], []
    for i, run_dir in enumerate(run_dirs):
        run = RunDir(run_dir)
        if not run.config_path.exists():
            new.append(i)
        elif (summary := run.summary() or {}).get("status") == "completed":
            results[i] = summary
        else:
            stopped.append(i)
    by_shape: dict[str, list[int]] = {}
    tasks = {i: build_task(configs[i].task) for i in new}
    for i in new:
        key = f"{tasks[i].io().shape()} {type(tasks[i]).loss.__qualname__}"
        by_shape.setdefault(key, []).append(i)
    for members in by_shape.values():
        done = train_pack(
            [configs[i] for i in members],
            [run_dirs[i] for i in members],
            data=[tasks[i] for i in members],
        )
        results.update(zip(members, done, strict=True))
    steps = {(RunDir(run_dirs[i]).checkpoint_steps() or [0])[-1] for i in stopped}
    if len(stopped) > 1 and len(steps) == 1:
        loaded = [RunDir(run_dirs[i]).load_config() for i in stopped]
        done = train_pack(loaded, [run_dirs[i] for i in stopped], resume=True)
        results.update(zip(stopped, done, strict=True))
    else:
        for i in stopped:
            results[i] = train_or_reuse(configs[i], run_dirs[i])
    return [results[i] for i in range(len(configs))]


def train_packed_strict(configs: list[RunConfig], run_dirs: list[Path]) -> list[dict[str, Any]]:
    """``train_packed`` where a member that failed fails the call (``RunFailed``, as an unpacked
    run's failure does in a study) once the pack is over: the others' folders are complete."""
    from reasonlab.core.errors import RunFailed

    results = train_packed(configs, run_dirs)
    failed = [r for r in results if r.get("status") == "failed"]
    if failed:
        raise RunFailed(str(failed[0].get("error")), step=failed[0].get("failed_step"))
    return results


def train_pack_trial(configs: list[RunConfig], run_dirs: list[Path]) -> list[dict[str, Any]]:
    """``train_packed`` with a failure of the whole pack returned as each member's failed
    result (a member's own failure is already its own failed summary)."""
    try:
        return train_packed(configs, run_dirs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # the pack's failure is each of its trials' result
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        failed = {"status": "failed", "error": f"{type(exc).__name__}: {message}"}
        return [dict(failed) for _ in configs]


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


def _train_pack_in_worker(
    configs: list[RunConfig], run_dirs: list[Path], isolate: bool
) -> list[dict[str, Any]]:
    try:
        return (train_pack_trial if isolate else train_packed_strict)(configs, run_dirs)
    except KeyboardInterrupt:
        sys.stdout.flush()
        os._exit(130)


def member_futures(pack: Future[list[dict[str, Any]]], count: int) -> list[Future[dict[str, Any]]]:
    """One future per member of a pack's future (its result, or the pack's error)."""
    futures: list[Future[dict[str, Any]]] = [Future() for _ in range(count)]

    def settle(done: Future[list[dict[str, Any]]]) -> None:
        error = done.exception()
        for i, future in enumerate(futures):
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result()[i])

    pack.add_done_callback(settle)
    return futures


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

    def submit_pack(
        self, configs: list[RunConfig], run_dirs: list[Path]
    ) -> list[Future[dict[str, Any]]]:
        """Trains the runs of one planned pack (``train_packed``); a future per member."""
        if self.pool is not None:
            pack = self.pool.submit(_train_pack_in_worker, configs, run_dirs, self.isolate)
            return member_futures(pack, len(configs))
        done: Future[list[dict[str, Any]]] = Future()
        train = train_pack_trial if self.isolate else train_packed_strict
        done.set_result(train(configs, run_dirs))
        return member_futures(done, len(configs))

    def close(self, stop_workers: bool = False) -> None:
        """Waits for the workers, or (after an error or a SIGTERM, which reaches this process
        only) ends them: their runs stay resumable from their last checkpoint."""
        if self.pool is None:
            return
        if stop_workers:
            for process in list(self.pool._processes.values()):  # no public way to end them
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)
