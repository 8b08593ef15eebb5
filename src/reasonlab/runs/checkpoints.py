"""What a training checkpoint holds (the model, the optimizer state and the RNG states as one
flat dict of tensors) and which checkpoints a run keeps: the log-spaced schedule, the last step,
the latest one to resume from. The files themselves are written and read by ``RunDir``."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import torch
from torch import Tensor, nn

from reasonlab.config import ConfigError, RunConfig
from reasonlab.core.errors import RunFailed
from reasonlab.models.base import strip_prefix
from reasonlab.runs.folder import RunDir
from reasonlab.runs.hashing import config_hash, legacy_config_hash
from reasonlab.runs.integrity import DamagedCheckpoint


def is_log_spaced(step: int, every: int) -> bool:
    """True at evaluation steps 1, 2, 4, 8, ... intervals of ``every`` into training."""
    if step % every:
        return False
    n = step // every
    return n > 0 and n & (n - 1) == 0


def pack_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """The model, the optimizer state and the RNG states as one flat dict of tensors."""
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).clone()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    return tensors


def load_model_state(model: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Loads a checkpoint's ``model.*`` tensors; a checkpoint of another shape is a ConfigError."""
    try:
        model.load_state_dict(strip_prefix(tensors))
    except RuntimeError:
        raise ConfigError(f"{source}: checkpoint does not fit this run's model") from None


def unpack_state(
    tensors: dict[str, Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    param_groups: list[dict[str, Any]],
    device: torch.device,
    source: str,
) -> None:
    """Restores what ``pack_state`` saved: weights, optimizer state, RNG states."""
    load_model_state(model, tensors, source)
    state: dict[int, dict[str, Tensor]] = {}
    try:
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                moved = value.to(device) if name != "step" else value
                state.setdefault(int(index), {})[name] = moved
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError):
        raise ConfigError(f"{source}: optimizer state does not fit this run's model") from None
    try:
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, RuntimeError, TypeError):
        raise ConfigError(f"{source}: rng.torch is not a torch RNG state") from None
    if torch.cuda.is_available():
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


CHECKPOINT_METADATA = {"elapsed_s": (int, float), "tokens": int, "param_groups": list}


def permanent_checkpoint(config: RunConfig, step: int, kept: Set[int] = frozenset()) -> bool:
    """Whether the checkpoint of ``step`` is kept for good (not only as the latest one): the
    log-spaced schedule, the last step, and the steps a continued run started from."""
    log_cfg = config.log
    if log_cfg.checkpoints == "none":
        return False
    if step == config.train.steps or step in kept:
        return True
    return log_cfg.checkpoints == "log" and is_log_spaced(step, config.eval.every)


class TrainingCheckpoints:
    """The checkpoints of one training run: where a resume starts, what a killed process left
    behind, and which checkpoint to keep after each evaluation."""

    def __init__(self, run: RunDir, config: RunConfig, kept: Set[int] = frozenset()):
        self.run, self.config = run, config
        self.kept = set(kept)  # kept for good beyond the schedule (where continued runs started)
        self.latest: int | None = None  # the newest checkpoint, kept only to resume from

    def resume_point(
        self, from_step: int | None = None
    ) -> tuple[int, tuple[dict[str, Tensor], dict[str, Any]] | None]:
        """The newest checkpoint's step and (tensors, metadata), checked; reads, never writes,
        so a refused resume leaves the folder as it was. A damaged newest checkpoint is refused
        with the newest intact one named; ``from_step`` resumes from that one (every newer
        checkpoint must be damaged: they are set aside by ``set_aside_newer``)."""
        steps = self.run.checkpoint_steps()
        if from_step is not None:
            return self._from_step(steps, from_step)
        if not steps:
            return 0, None
        step = steps[-1]
        try:
            return step, self._checked(step)
        except DamagedCheckpoint as error:
            intact = self._newest_intact(steps[:-1])
            if intact is None:
                raise ConfigError(f"{error}; no older checkpoint is intact either") from None
            raise ConfigError(
                f"{error}; nothing was changed: resume from the newest intact checkpoint with "
                f"reasonlab run --resume {self.run.path} --from-step {intact}"
            ) from None

    def _newest_intact(self, steps: list[int]) -> int | None:
        for step in reversed(steps):
            try:
                self.run.load_checkpoint(step)
                return step
            except ConfigError:
                continue
        return None

    def _from_step(
        self, steps: list[int], from_step: int
    ) -> tuple[int, tuple[dict[str, Tensor], dict[str, Any]]]:
        if from_step not in steps:
            raise ConfigError(f"--from-step: no checkpoint of step {from_step} (have {steps})")
        saved = self._checked(from_step)
        for newer in (s for s in steps if s > from_step):
            try:
                self.run.load_checkpoint(newer)
            except ConfigError:
                continue
            raise ConfigError(
                f"--from-step {from_step}: the checkpoint of step {newer} is newer and intact; "
                "resume without --from-step"
            )
        return from_step, saved

    def set_aside_newer(self, step: int) -> None:
        """Renames the (damaged) checkpoints newer than ``step`` to ``*.damaged``: kept for a
        look, no longer resumed from or listed, and not overwritten by the steps trained again."""
        for newer in (s for s in self.run.checkpoint_steps() if s > step):
            path = self.run.checkpoint_path(newer)
            path.rename(path.with_name(path.name + ".damaged"))

    def _checked(self, step: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        path = self.run.checkpoint_path(step)
        tensors, metadata = self.run.load_checkpoint(step)
        if metadata.get("config_hash") not in (
            config_hash(self.config),
            legacy_config_hash(self.config),
        ):
            raise ConfigError(f"{path}: checkpoint from another config")
        bad = [k for k, t in CHECKPOINT_METADATA.items() if not isinstance(metadata.get(k), t)]
        bad += [] if "rng.torch" in tensors else ["rng.torch"]
        if bad:
            raise ConfigError(f"{path}: checkpoint lacks a valid {', '.join(bad)}")
        weights = [
            t for k, t in tensors.items() if k.startswith("model.") and t.is_floating_point()
        ]
        if not all(bool(torch.isfinite(t).all()) for t in weights):
            raise ConfigError(f"{path}: holds non-finite (NaN or infinite) weights")
        return tensors, metadata

    def repair(
        self,
        step: int,
        records: list[dict[str, Any]],
        metadata: dict[str, Any] | None = None,
        remove_stale: bool = True,
    ) -> list[dict[str, Any]]:
        """Undoes what a process killed after checkpoint ``step`` (-1: none) left behind:
        temporary files, a stale latest-only checkpoint (unless ``remove_stale`` is off, when the
        run's summary that names the kept ones was lost), metrics past ``step`` and a torn last
        line. ``records`` are the metrics up to ``step``, read strictly; the record of ``step``
        itself, if it was torn, is rebuilt from the checkpoint's ``metadata``. Returns the
        records kept."""
        self.run.remove_temporary_files()
        if remove_stale:
            for stale in self.run.checkpoint_steps():
                if stale < step and not self.permanent(stale):
                    self.run.delete_checkpoint(stale)
        steps = self.run.checkpoint_steps()
        self.latest = steps[-1] if steps and step > 0 else None
        saved_record = (metadata or {}).get("record")
        torn = not records or records[-1]["step"] < step
        if torn and isinstance(saved_record, dict) and saved_record.get("step") == step:
            records = [*records, saved_record]
        self.run.rewrite_metrics(records)
        return records

    def permanent(self, step: int) -> bool:
        return permanent_checkpoint(self.config, step, self.kept)

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        metadata: dict[str, Any],
    ) -> None:
        """After the evaluation of ``step``: writes its checkpoint if the schedule keeps it or
        ``log.keep_latest`` asks for the latest, and drops the previous latest-only one."""
        last = step == self.config.train.steps
        if not (self.permanent(step) or self.config.log.keep_latest):
            return
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise RunFailed(
                f"{self.run.path}: stopped at step {step}: the weights are not finite; "
                "lower train.lr or set train.grad_clip",
                step=step,
            )
        metadata = {
            "config_hash": config_hash(self.config),
            **metadata,
            "param_groups": optimizer.state_dict()["param_groups"],
        }
        self.run.save_checkpoint(step, pack_state(model, optimizer), metadata)
        if self.latest is not None and self.latest != step and not self.permanent(self.latest):
            self.run.delete_checkpoint(self.latest)
        self.latest = step
        if last and not self.permanent(step):
            self.run.delete_checkpoint(step)  # the run is over: nothing left to resume
            self.latest = None
