"""The one training loop: every task, every model family, CPU or CUDA.

AdamW (no decay on norms and biases), linear warm-up then constant or cosine, gradient clipping,
loss on the completion only, batches drawn from in-memory tensors in a per-epoch permutation that
depends only on (seed, epoch), so a resumed run sees exactly the batches it would have seen.
Evaluation runs every ``eval.every`` steps; checkpoints are kept on a log-spaced schedule.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reasonlab.config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
)
from reasonlab.evaluate import evaluate
from reasonlab.models.build import build_model
from reasonlab.progress import Progress
from reasonlab.runs import RunDir, check_data_fingerprint, is_log_spaced, versions, write_json
from reasonlab.tasks import TaskData, build_task

RESERVED_KEYS = ("step", "loss", "lr", "tokens", "elapsed_s")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available")
    return device


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ConfigError("train.precision: bf16 autocast is only used on CUDA; use fp32 or auto")
    return device.type == "cuda" and cfg.precision in ("auto", "bf16")


def config_hash(config: RunConfig) -> str:
    """Identifies what a checkpoint was trained on (the task, the model and the optimizer); the
    device and the number of steps are left out, so a run can move or be continued."""
    data = config.model_dump(mode="json", include={"task", "model", "train"})
    data["train"].pop("device", None)
    data["train"].pop("steps", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def legacy_config_hash(config: RunConfig) -> str:
    """The hash of reasonlab 0.1.0 checkpoints, which counted the steps in: still resumable."""
    data = config.model_dump(mode="json", include={"task", "model", "train"})
    data["train"].pop("device", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- pieces


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class EpochSampler:
    """Batch ``step`` = the next ``batch_size`` indices of a stream of epoch permutations."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self._cached: tuple[int, Tensor] | None = None

    def permutation(self, epoch: int) -> Tensor:
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cached = (epoch, torch.randperm(self.size, generator=generator))
        return self._cached[1]

    def batch(self, step: int) -> Tensor:
        start, parts, needed = step * self.batch_size, [], self.batch_size
        while needed:
            epoch, offset = divmod(start, self.size)
            take = min(needed, self.size - offset)
            parts.append(self.permutation(epoch)[offset : offset + take])
            start, needed = start + take, needed - take
        return torch.cat(parts)


def completion_loss(model: nn.Module, tokens: Tensor, loss_mask: Tensor) -> Tensor:
    """Mean cross-entropy over the positions the loss mask selects (next-token prediction)."""
    logits = model(tokens[:, :-1])
    targets, mask = tokens[:, 1:], loss_mask[:, 1:]
    return F.cross_entropy(logits[mask].float(), targets[mask])


def pack_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).clone()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    return tensors


def unpack_state(
    tensors: dict[str, Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    param_groups: list[dict[str, Any]],
    device: torch.device,
    source: str,
) -> None:
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError:
        raise ConfigError(f"{source}: checkpoint does not fit this run's model") from None
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


# ----------------------------------------------------------------------------- the loop


@dataclass
class History:
    records: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0  # the last optimizer step completed

    def probe_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for record in self.records:
            keys.update({k: None for k in record if k not in RESERVED_KEYS})
        return list(keys)

    def summary(self, threshold: float) -> dict[str, Any]:
        keys = self.probe_keys()
        final = {k: self.records[-1].get(k) for k in keys} if self.records else {}
        best = {k: max((r[k] for r in self.records if k in r), default=None) for k in keys}
        reached = {
            k: next((r["step"] for r in self.records if r.get(k, -1) >= threshold), None)
            for k in keys
        }
        return {"final": final, "best": best, "steps_to_threshold": reached}


def headline_probes(data: TaskData) -> list[str]:
    preferred = [k for k in ("test_inferred_iid", "test_inferred_ood") if k in data.probes]
    return preferred or list(data.probes)[:2]


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    data: TaskData | None = None,
    allow_data_change: bool = False,
    on_resume: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Trains one run into the folder ``out`` (new, or an existing one with ``resume``).

    The folder is locked for the whole call: another process that tries to train, resume or
    analyse it meanwhile is refused and changes nothing. On resume the task is rebuilt and its
    fingerprint compared with the one recorded when the run was made (``allow_data_change``
    proceeds on a mismatch and notes it). A resume whose ``train.steps`` is larger than the
    recorded one continues the run to the new length. ``on_resume(step)`` is called once every
    check has passed, before training resumes at ``step``."""
    run = RunDir(out)
    device = resolve_device(config.train.device)
    autocast = uses_bf16(config.train, device)
    data = data if data is not None else build_task(config.task)
    if data.resolved:  # what the data decides (e.g. the CoT pattern of a data_dir folder)
        config = config.model_copy(update={"task": config.task.model_copy(update=data.resolved)})
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.vocab_size, data.max_seq_len).to(device)
    optimizer = make_optimizer(model, config.train)
    # Only now, with data and model built (bad input already refused), touch the folder.
    if resume:
        run.load_config()  # a clear error for a missing folder, a study folder, ...
    else:
        run.claim()
    with run.lock():
        return _train_locked(
            config,
            run,
            data,
            model,
            optimizer,
            device,
            autocast,
            resume,
            allow_data_change,
            on_resume,
        )


def _train_locked(
    config: RunConfig,
    run: RunDir,
    data: TaskData,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    autocast: bool,
    resume: bool,
    allow_data_change: bool,
    on_resume: Callable[[int], None] | None,
) -> dict[str, Any]:
    notes = list(data.notes) + schedule_notes(config.train)
    fingerprint = data.fingerprint()
    kept: set[int] = set()  # checkpoints kept for good beyond the schedule (continued runs)
    elapsed_before, tokens_seen, records = 0.0, 0, []
    if resume:
        previous = run.summary() or {}
        data_note = check_data_fingerprint(run, fingerprint, allow_data_change)
        start_step, state = _prepare_resume(run, config)
        recorded_steps = run.load_config().train.steps
        kept = {int(s) for s in previous.get("continued_from", [])}
        notes = list(dict.fromkeys([*previous.get("notes", []), *notes]))
        if recorded_steps != config.train.steps:
            if config.train.steps <= start_step:
                raise ConfigError(
                    f"train.steps: {config.train.steps} is not beyond step {start_step}, "
                    "where the run's newest checkpoint is"
                )
            kept.add(start_step)
            notes.append(
                f"continued from step {start_step}: train.steps {recorded_steps} -> "
                f"{config.train.steps}"
            )
        if data_note:
            notes.append(data_note)
        if state is not None:
            tensors, metadata = state
            path = str(run.checkpoint_path(start_step))
            unpack_state(tensors, model, optimizer, metadata["param_groups"], device, path)
            elapsed_before, tokens_seen = metadata["elapsed_s"], metadata["tokens"]
        # every check passed and the checkpoint is restored: only now may the folder change
        if on_resume is not None:
            on_resume(start_step)
        if recorded_steps != config.train.steps:
            write_json(run.config_path, config.model_dump(mode="json"))
        # repair what a killed process left behind
        records = _repair_for_resume(run, config, start_step if state is not None else -1, kept)
    else:
        run.create(config, data.vocab)
        start_step = 0
    for note in notes:
        if note.startswith(WARNING_PREFIX):
            print(f"{run.path}: {note}", file=sys.stderr)

    history = History(records, step=start_step)
    summary_base = {
        "status": "running",
        "steps": config.train.steps,
        "device": str(device),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "data_fingerprint": fingerprint,
        "data_stats": data.stats,
        "notes": notes,
        "versions": versions(),
    }
    if kept:
        summary_base["continued_from"] = sorted(kept)
    write_json(
        run.summary_path,
        {
            **summary_base,
            **history.summary(config.eval.threshold),
            "step": start_step,
            "wall_s": elapsed_before,
        },
    )
    progress = Progress(
        config.log.progress,
        config.train.steps,
        start_step,
        headline_probes(data),
        run=run.path,
        eval_every=config.eval.every,
        device=device.type,
    )
    started = time.perf_counter()
    status, error = "failed", None
    try:
        _loop(
            config,
            run,
            model,
            optimizer,
            data,
            device,
            autocast,
            history,
            progress,
            start_step,
            elapsed_before,
            tokens_seen,
            started,
            kept,
        )
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except Exception as exc:  # recorded in the summary, then re-raised
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        progress.close()
        checkpoints = run.checkpoint_steps()
        summary = {
            **summary_base,
            "status": status,
            **history.summary(config.eval.threshold),
            "step": history.step,
            "last_checkpoint": checkpoints[-1] if checkpoints else None,
            "wall_s": round(elapsed_before + time.perf_counter() - started, 3),
        }
        if status != "completed" and checkpoints:
            summary["resume"] = f"reasonlab run --resume {run.path}"
        if error:
            summary["error"] = error
        write_json(run.summary_path, summary)
    return summary


WARNING_PREFIX = "warning: "


def schedule_notes(cfg: TrainConfig) -> list[str]:
    """Settings that are legal but rarely meant, said once in the run's notes (and on stderr)."""
    if cfg.warmup_steps > cfg.steps:
        reached = learning_rate(cfg.steps - 1, cfg)
        return [
            f"{WARNING_PREFIX}train.warmup_steps {cfg.warmup_steps} exceeds train.steps "
            f"{cfg.steps}: the learning rate ends at {reached:.3g}, never reaching train.lr "
            f"{cfg.lr:g}"
        ]
    return []


def extend_config(config: RunConfig, overrides: list[str]) -> RunConfig:
    """A run's config with ``--set`` overrides for ``--resume``: only ``train.steps`` may change
    (continue the run to more steps); anything else would make the checkpoints mean something
    else."""
    data = apply_overrides(config.model_dump(mode="json"), overrides)
    extended = config_from_dict(data)
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key != "train.steps":
            raise ConfigError(
                f"--set {key}: with --resume only train.steps can change (to continue a run)"
            )
    return extended


CHECKPOINT_METADATA = {"elapsed_s": (int, float), "tokens": int, "param_groups": list}


def _prepare_resume(run: RunDir, config: RunConfig):
    """The newest checkpoint's step and (tensors, metadata), checked; reads, never writes, so a
    refused resume leaves the folder as it was."""
    steps = run.checkpoint_steps()
    if not steps:
        return 0, None
    step = steps[-1]
    path = run.checkpoint_path(step)
    tensors, metadata = run.load_checkpoint(step)
    if metadata.get("config_hash") not in (config_hash(config), legacy_config_hash(config)):
        raise ConfigError(f"{path}: checkpoint from another config")
    bad = [k for k, kind in CHECKPOINT_METADATA.items() if not isinstance(metadata.get(k), kind)]
    bad += [] if "rng.torch" in tensors else ["rng.torch"]
    if bad:
        raise ConfigError(f"{path}: checkpoint lacks a valid {', '.join(bad)}")
    return step, (tensors, metadata)


def _repair_for_resume(
    run: RunDir, config: RunConfig, step: int, kept: set[int]
) -> list[dict[str, Any]]:
    """Undoes what a process killed after checkpoint ``step`` (-1: none) left behind: temporary
    files, a stale latest-only checkpoint, metrics past ``step`` and a torn last line."""
    run.remove_temporary_files()
    for stale in run.checkpoint_steps():
        if stale < step and not permanent_checkpoint(config, stale, kept):
            run.delete_checkpoint(stale)
    return run.truncate_metrics(step)


def _loop(
    config: RunConfig,
    run: RunDir,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TaskData,
    device: torch.device,
    autocast: bool,
    history: History,
    progress: Progress,
    start_step: int,
    elapsed_before: float,
    tokens_seen: int,
    started: float,
    kept: set[int],
) -> None:
    train_cfg, eval_cfg = config.train, config.eval
    sampler = EpochSampler(len(data.train_tokens), train_cfg.batch_size, train_cfg.seed)
    context = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    pin = device.type == "cuda"
    train_tokens = data.train_tokens.pin_memory() if pin else data.train_tokens
    train_mask = data.train_loss_mask.pin_memory() if pin else data.train_loss_mask
    latest_kept: int | None = run.checkpoint_steps()[-1] if start_step else None

    def log_evaluation(step: int, loss: float | None) -> dict[str, Any]:
        progress.evaluating(step)
        accuracies = evaluate(model, data.probes, eval_cfg.batch_size, device, autocast)
        record = {
            "step": step,
            **accuracies,
            "loss": loss,
            "lr": learning_rate(max(step - 1, 0), train_cfg),
            "tokens": tokens_seen,
            "elapsed_s": round(elapsed_before + time.perf_counter() - started, 3),
        }
        run.append_metrics(record)
        history.records.append(record)
        return record

    if start_step == 0 and eval_cfg.at_start:
        progress.evaluated(log_evaluation(0, None))
    model.train()
    loss_sum, loss_count = 0.0, 0
    for step in range(start_step, train_cfg.steps):
        lr = learning_rate(step, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = sampler.batch(step)
        tokens = train_tokens[index].to(device, non_blocking=True)
        mask = train_mask[index].to(device, non_blocking=True)
        with context:
            loss = completion_loss(model, tokens, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
        tokens_seen += int((tokens != data.pad_id).sum())
        done = history.step = step + 1
        progress.step_done(done)
        if done % eval_cfg.every and done != train_cfg.steps:
            continue
        record = log_evaluation(done, round(loss_sum / loss_count, 6))
        loss_sum, loss_count = 0.0, 0
        progress.evaluated(record)
        latest_kept = _checkpoint(
            config, run, model, optimizer, done, record, tokens_seen, latest_kept, kept
        )


def permanent_checkpoint(config: RunConfig, step: int, kept: set[int] = frozenset()) -> bool:
    """Whether the checkpoint of ``step`` is kept for good (not only as the latest one): the
    log-spaced schedule, the last step, and the steps a continued run started from."""
    log_cfg = config.log
    if log_cfg.checkpoints == "none":
        return False
    if step == config.train.steps or step in kept:
        return True
    return log_cfg.checkpoints == "log" and is_log_spaced(step, config.eval.every)


def _checkpoint(
    config: RunConfig,
    run: RunDir,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    record: dict[str, Any],
    tokens_seen: int,
    latest_kept: int | None,
    kept: set[int],
) -> int | None:
    last = step == config.train.steps
    permanent = functools.partial(permanent_checkpoint, config, kept=kept)
    if not (permanent(step) or config.log.keep_latest):
        return latest_kept
    metadata = {
        "config_hash": config_hash(config),
        "elapsed_s": record["elapsed_s"],
        "tokens": tokens_seen,
        "param_groups": optimizer.state_dict()["param_groups"],
    }
    run.save_checkpoint(step, pack_state(model, optimizer), metadata)
    if latest_kept is not None and latest_kept != step and not permanent(latest_kept):
        run.delete_checkpoint(latest_kept)
    if last and not permanent(step):
        run.delete_checkpoint(step)  # the run is over: nothing left to resume
        return None
    return step
