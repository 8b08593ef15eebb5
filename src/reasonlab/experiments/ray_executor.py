"""The Ray executor of a sweep (``reasonlab sweep --executor ray``): each trial a Ray task that
trains into the sweep's folder as a local trial would, with ``cpus_per_trial`` CPUs (its torch
threads) and ``gpus_per_trial`` GPUs (fractions allowed). ``ray.init()`` starts a local Ray on
this machine, ``--address`` joins a running cluster; a GPU is only asked for when the cluster
has one. Ray is an optional extra, imported only here."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError, RunConfig


def _trial_task(config: RunConfig, run_dir: str, threads: int) -> dict[str, Any]:
    """Runs on a Ray worker: one trial with its share of threads; a failure is its result."""
    import torch

    from reasonlab.experiments.trials import train_trial

    torch.set_num_threads(max(1, threads))
    return train_trial(config, Path(run_dir))


def _check_answers(address: str, timeout: float = 5.0) -> None:
    """A cluster address (host:port, or ray://host:port) must accept a connection within
    ``timeout`` seconds: ray.init would otherwise wait minutes on one that does not answer."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address: {address!r} is not host:port (or ray://host:port)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--address: {address} does not answer ({exc.strerror or exc})") from None


class RayFuture:
    def __init__(self, ray: Any, ref: Any) -> None:
        self.ray, self.ref = ray, ref

    def result(self) -> dict[str, Any]:
        return self.ray.get(self.ref)


class RayRunner:
    """Submits trials as Ray tasks; ``close`` shuts down a Ray this runner started."""

    parallel = True

    def __init__(self, address: str | None, cpus_per_trial: float, gpus_per_trial: float):
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--executor: ray is not installed (pip install 'reasonlab[ray]')"
            ) from None
        if cpus_per_trial <= 0:
            raise ConfigError(f"--cpus-per-trial: expected more than 0, got {cpus_per_trial}")
        if gpus_per_trial < 0:
            raise ConfigError(f"--gpus-per-trial: expected 0 or more, got {gpus_per_trial}")
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started and address not in (None, "auto", "local"):
            _check_answers(address)
        if self.started:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError, ...
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"--address: Ray did not start or answer ({first})") from None
        resources = ray.cluster_resources()
        if gpus_per_trial > 0 and resources.get("GPU", 0) < gpus_per_trial:
            self.close()
            raise ConfigError(
                f"--gpus-per-trial: {gpus_per_trial} asked, the cluster has "
                f"{resources.get('GPU', 0):g} GPUs"
            )
        if resources.get("CPU", 0) < cpus_per_trial:
            self.close()
            raise ConfigError(
                f"--cpus-per-trial: {cpus_per_trial} asked, the cluster has "
                f"{resources.get('CPU', 0):g} CPUs"
            )
        self.task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial)(_trial_task)
        self.threads = int(cpus_per_trial)

    def submit(self, config: RunConfig, run_dir: Path) -> RayFuture:
        ref = self.task.remote(config, str(run_dir.resolve()), self.threads)
        return RayFuture(self.ray, ref)

    def close(self, stop_workers: bool = False) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
