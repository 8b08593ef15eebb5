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
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reasonlab.config import ConfigError, RunConfig, TrainConfig
from reasonlab.evaluate import evaluate
from reasonlab.models.build import build_model
from reasonlab.runs import RunDir, is_log_spaced, versions, write_json
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
    """Identifies what a checkpoint was trained on (the task, the model and the optimizer)."""
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


class Progress:
    """A rich progress bar with loss, two headline accuracies and ETA (silent when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int, headline: list[str]):
        self.headline, self.bar = headline, None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, record: dict[str, Any] | None = None) -> None:
        if self.bar is None:
            return
        fields = {}
        if record is not None:
            parts = [f"loss {record['loss']:.3f}"] if record.get("loss") is not None else []
            parts += [f"{k} {record[k]:.2f}" for k in self.headline if k in record]
            fields["info"] = "  ".join(parts)
        self.bar.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def headline_probes(data: TaskData) -> list[str]:
    preferred = [k for k in ("test_inferred_iid", "test_inferred_ood") if k in data.probes]
    return preferred or list(data.probes)[:2]


def train(
    config: RunConfig, out: str | Path, *, resume: bool = False, data: TaskData | None = None
) -> dict[str, Any]:
    """Trains one run into the folder ``out`` (new, or an existing one with ``resume``)."""
    run = RunDir(out)
    device = resolve_device(config.train.device)
    autocast = uses_bf16(config.train, device)
    data = data if data is not None else build_task(config.task)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.vocab_size, data.max_seq_len).to(device)
    optimizer = make_optimizer(model, config.train)
    # Only now, with data and model built (bad input already refused), touch the folder.
    if resume:
        start_step, state = _prepare_resume(run, config)
    else:
        run.create(config)
        start_step, state = 0, None
    elapsed_before, tokens_seen, records = 0.0, 0, []
    if state is not None:
        tensors, metadata = state
        unpack_state(
            tensors,
            model,
            optimizer,
            metadata["param_groups"],
            device,
            str(run.checkpoint_path(start_step)),
        )
        elapsed_before, tokens_seen = metadata["elapsed_s"], metadata["tokens"]
    if resume:  # the checkpoint is restored: only now repair what a killed process left
        records = _repair_for_resume(run, config, start_step if state is not None else -1)

    history = History(records)
    summary_base = {
        "status": "running",
        "steps": config.train.steps,
        "device": str(device),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "data_fingerprint": data.fingerprint(),
        "data_stats": data.stats,
        "notes": data.notes,
        "versions": versions(),
    }
    write_json(
        run.summary_path,
        {**summary_base, **history.summary(config.eval.threshold), "wall_s": elapsed_before},
    )
    progress = Progress(config.log.progress, config.train.steps, start_step, headline_probes(data))
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
        summary = {
            **summary_base,
            "status": status,
            **history.summary(config.eval.threshold),
            "wall_s": round(elapsed_before + time.perf_counter() - started, 3),
        }
        if error:
            summary["error"] = error
        write_json(run.summary_path, summary)
    return summary


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
    if metadata.get("config_hash") != config_hash(config):
        raise ConfigError(f"{path}: checkpoint from another config")
    bad = [k for k, kind in CHECKPOINT_METADATA.items() if not isinstance(metadata.get(k), kind)]
    bad += [] if "rng.torch" in tensors else ["rng.torch"]
    if bad:
        raise ConfigError(f"{path}: checkpoint lacks a valid {', '.join(bad)}")
    return step, (tensors, metadata)


def _repair_for_resume(run: RunDir, config: RunConfig, step: int) -> list[dict[str, Any]]:
    """Undoes what a process killed after checkpoint ``step`` (-1: none) left behind: temporary
    files, a stale latest-only checkpoint, metrics past ``step`` and a torn last line."""
    run.remove_temporary_files()
    for stale in run.checkpoint_steps():
        if stale < step and not permanent_checkpoint(config, stale):
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
) -> None:
    train_cfg, eval_cfg = config.train, config.eval
    sampler = EpochSampler(len(data.train_tokens), train_cfg.batch_size, train_cfg.seed)
    context = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    pin = device.type == "cuda"
    train_tokens = data.train_tokens.pin_memory() if pin else data.train_tokens
    train_mask = data.train_loss_mask.pin_memory() if pin else data.train_loss_mask
    latest_kept: int | None = run.checkpoint_steps()[-1] if start_step else None

    def log_evaluation(step: int, loss: float | None) -> dict[str, Any]:
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
        progress.update(0, log_evaluation(0, None))
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
        done = step + 1
        if done % eval_cfg.every and done != train_cfg.steps:
            if done % 10 == 0:
                progress.update(done)
            continue
        record = log_evaluation(done, round(loss_sum / loss_count, 6))
        loss_sum, loss_count = 0.0, 0
        progress.update(done, record)
        latest_kept = _checkpoint(
            config, run, model, optimizer, done, record, tokens_seen, latest_kept
        )


def permanent_checkpoint(config: RunConfig, step: int) -> bool:
    """Whether the checkpoint of ``step`` is kept for good (not only as the latest one)."""
    log_cfg = config.log
    if log_cfg.checkpoints == "none":
        return False
    if step == config.train.steps:
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
) -> int | None:
    last = step == config.train.steps
    permanent = functools.partial(permanent_checkpoint, config)
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
