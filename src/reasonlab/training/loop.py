"""The one training loop: every task, every model family, CPU or CUDA.

AdamW (no decay on norms and biases), linear warm-up then constant or cosine, gradient clipping.
The task (``tasks/base.py``, ``Task``) draws each step's batch as a function of (seed, step), so a
resumed run sees exactly the batches it would have seen, and computes the loss from the model's
outputs: the loop itself knows no kind of task.
Evaluation runs every ``eval.every`` steps; checkpoints are kept on a log-spaced schedule.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reasonlab.config import (
    ConfigError,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from reasonlab.core.errors import RunFailed
from reasonlab.models.build import build_model
from reasonlab.runs.checkpoints import TrainingCheckpoints
from reasonlab.runs.folder import RunDir
from reasonlab.runs.metrics import finite_record
from reasonlab.tasks import Task, build_task
from reasonlab.tasks.base import Batch, sample_probes
from reasonlab.training.evaluation import evaluate
from reasonlab.training.nonfinite import check_finite, gradient_norm, nonfinite_failure
from reasonlab.training.precision import (
    autocast_context,
    precision_for_run,
    precision_notes,
)
from reasonlab.training.progress import Progress
from reasonlab.training.resume import prepare_resume
from reasonlab.training.state import History, Training, end_summary, start_summary
from reasonlab.training.tracking import Tracking, open_tracking, require_trackers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available")
    return device


# ----------------------------------------------------------------------------- pieces


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # no decay on norms, biases and what a family marks (Mamba's A_log and D, as the reference)
    def decays(p: nn.Parameter) -> bool:
        return p.dim() >= 2 and not getattr(p, "_no_weight_decay", False)

    decay = [p for p in model.parameters() if p.requires_grad and decays(p)]
    no_decay = [p for p in model.parameters() if p.requires_grad and not decays(p)]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, fused=fused_adamw(decay + no_decay)
    )


def fused_adamw(params: list[nn.Parameter]) -> bool:
    """Whether AdamW's fused kernel serves these parameters: float tensors on a CPU or CUDA (one
    kernel for every tensor instead of a dozen operations each; on the quick model's CPU step
    1.75 ms against 7.2, docs/BENCHMARKS.md). Elsewhere the default implementation."""
    supported = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return bool(params) and supported


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_task_model(
    model_config: ModelConfig, data: Task, device: torch.device | None = None
) -> nn.Module:
    """The model of ``model_config`` reading and writing what the task does (``Task.io``),
    refused before allocation if it would not fit the memory of ``device`` (or the machine)."""
    io = data.io()
    return build_model(
        model_config, io.vocab_size, io.max_seq_len, io.input_dim, io.output_dim, device=device
    )


def step_loss(model: nn.Module, data: Task, batch: Batch) -> Tensor:
    """The loss of one training step: the task's loss on the model's outputs for the batch."""
    return data.loss(model(batch.inputs), batch)


# ----------------------------------------------------------------------------- the loop


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    data: Task | None = None,
    allow_data_change: bool = False,
    on_resume: Callable[[int], None] | None = None,
    from_step: int | None = None,
) -> dict[str, Any]:
    """Trains one run into the folder ``out`` (new, or an existing one with ``resume``).

    The folder is locked for the whole call: another process that tries to train, resume or
    analyse it meanwhile is refused and changes nothing. On resume the task is rebuilt and its
    fingerprint compared with the one recorded when the run was made (``allow_data_change``
    proceeds on a mismatch and notes it). A resume whose ``train.steps`` is larger than the
    recorded one continues the run to the new length. ``on_resume(step)`` is called once every
    check has passed, before training resumes at ``step``. ``from_step`` resumes from that
    checkpoint when every newer one is damaged (they are set aside as ``*.damaged``).

    A non-finite loss or gradient norm stops the run (``RunFailed``, summary.json ``failed``
    with the step) or skips the step (``train.on_nonfinite: skip_step``). A file-system error
    (a full disk) ends the run as ``failed`` where summary.json can still be written. Returns
    what the run's summary.json holds (``RunSummary``, as JSON)."""
    run = RunDir(out)
    require_trackers(config.log.trackers())  # a missing package: refused before any work
    device = resolve_device(config.train.device)
    data = data if data is not None else build_task(config.task)
    if data.resolved:  # what the data decides (e.g. the CoT pattern of a data_dir folder)
        config = config.model_copy(update={"task": config.task.model_copy(update=data.resolved)})
    autocast = precision_for_run(config, device, data.io().max_seq_len).bf16
    torch.manual_seed(config.train.seed)
    model = build_task_model(config.model, data, device).to(device)
    optimizer = make_optimizer(model, config.train)
    # Only now, with data and model built (bad input already refused), touch the folder.
    if resume:
        run.load_config()  # a clear error for a missing folder, a study folder, ...
        run.check_writable()
    elif from_step is not None:
        raise ConfigError("--from-step: only with --resume")
    else:
        run.claim()
    state = Training(
        config,
        run,
        data,
        model,
        optimizer,
        device,
        autocast,
        TrainingCheckpoints(run, config),
        History(),
    )
    with run.lock():
        return _train_locked(state, resume, allow_data_change, on_resume, from_step)


def _train_locked(
    state: Training,
    resume: bool,
    allow_data_change: bool,
    on_resume: Callable[[int], None] | None,
    from_step: int | None = None,
) -> dict[str, Any]:
    config, run, data = state.config, state.run, state.data
    notes = run_notes(state)
    fingerprint = data.fingerprint()
    if resume:
        notes = prepare_resume(state, fingerprint, notes, allow_data_change, on_resume, from_step)
    else:
        run.create(config, data.vocab)
    for note in notes:
        if note.startswith(WARNING_PREFIX):
            print(f"{run.path}: {note}", file=sys.stderr)
    summary = start_summary(state, notes, fingerprint)
    state.progress = Progress(
        config.log.progress,
        config.train.steps,
        state.start_step,
        data.headline_probes(),
        run=run.path,
        eval_every=config.eval.every,
        device=state.device.type,
    )
    state.started = time.perf_counter()
    status, error, failed_step = "failed", None, None
    try:
        state.tracking = open_tracking_of(state)
        _loop(state)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except RunFailed as exc:
        error, failed_step = str(exc), exc.step
        raise
    except OSError as exc:  # a full disk, a read-only file system: the cause is outside
        error = f"{exc.filename or run.path}: cannot write ({exc.strerror})"
        raise ConfigError(
            f"{error}; the run is marked failed and resumes with: reasonlab run --resume {run.path}"
        ) from None
    except Exception as exc:  # recorded in the summary, then re-raised
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        state.progress.close()
        summary = end_summary(state, summary, status, error, failed_step)
        unwritten = summary.write_if_possible(run.summary_path)
        if state.tracking is not None:
            state.tracking.finish(summary.as_json(), status)
        if unwritten is not None and status == "completed":
            raise ConfigError(
                f"{run.summary_path}: cannot write ({unwritten.strerror}); the run trained to "
                f"its end: once the disk has room, reasonlab run --resume {run.path} writes it"
            )
    return summary.as_json()


WARNING_PREFIX = "warning: "


def open_tracking_of(state: Training) -> Tracking | None:
    """The run's experiment trackers (``log.tracker``; None without), given the records a
    resumed run has so far that they have not got yet."""
    config = state.config
    return open_tracking(
        config.log.trackers(),
        state.run.path,
        config.name,
        config.model_dump(mode="json"),
        state.history.records,
    )


def run_notes(state: Training) -> list[str]:
    """What a run is told once, in its summary's notes: the task's notes, legal but rarely meant
    settings, the precision where it is not what one would guess, a sampled evaluation."""
    config, data = state.config, state.data
    notes = list(data.notes) + schedule_notes(config.train)
    notes += precision_notes(
        config.train, state.device, precision_for_run(config, state.device, data.io().max_seq_len)
    )
    if config.eval.sample is not None:
        notes.append(
            f"evaluations before step {config.train.steps} scored at most {config.eval.sample} "
            "rows per probe (eval.sample); the last one every row"
        )
    return notes


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


def _loop(state: Training) -> None:
    config, run, data, model, device = (
        state.config,
        state.run,
        state.data,
        state.model,
        state.device,
    )
    train_cfg, eval_cfg = config.train, config.eval
    progress, history, optimizer = state.progress, state.history, state.optimizer
    assert progress is not None
    context = autocast_context(device, state.autocast)
    if device.type == "cuda":
        data.pin_memory()
    model_shape = data.io().shape()

    sampled = data.probes
    if eval_cfg.sample is not None:
        sampled = sample_probes(data.probes, eval_cfg.sample, config.train.seed)

    def log_evaluation(step: int, loss: float | None) -> dict[str, Any]:
        progress.evaluating(step)
        probes = data.probes if step == train_cfg.steps else sampled
        accuracies = evaluate(model, probes, eval_cfg.batch_size, device, state.autocast)
        record = finite_record(
            {
                "step": step,
                **accuracies,
                "loss": loss,
                "lr": learning_rate(max(step - 1, 0), train_cfg),
                "tokens": state.tokens_seen,
                "elapsed_s": state.elapsed(),
            }
        )
        run.append_metrics(record)
        history.records.append(record)
        if state.tracking is not None:
            state.tracking.log(record)
        return record

    if state.start_step == 0 and eval_cfg.at_start:
        progress.evaluated(log_evaluation(0, None))
    model.train()
    loss_sum, loss_count = 0.0, 0
    for step in range(state.start_step, train_cfg.steps):
        lr = learning_rate(step, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = data.batch(step, train_cfg.batch_size, train_cfg.seed).to(device)
        with context:
            loss = step_loss(model, data, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss_value, finite = check_finite(loss, gradient_norm(model, train_cfg.grad_clip))
        if finite:
            optimizer.step()
            loss_sum, loss_count = loss_sum + loss_value, loss_count + 1
        elif train_cfg.on_nonfinite == "skip_step":
            state.skipped.append(step + 1)
        else:
            raise nonfinite_failure(state, step + 1, loss_value)
        state.tokens_seen += batch.units
        done = history.step = step + 1
        progress.step_done(done)
        if done % eval_cfg.every and done != train_cfg.steps:
            continue
        mean_loss = round(loss_sum / loss_count, 6) if loss_count else None
        record = log_evaluation(done, mean_loss)
        loss_sum, loss_count = 0.0, 0
        progress.evaluated(record)
        metadata = {
            "elapsed_s": record["elapsed_s"],
            "tokens": state.tokens_seen,
            "model_shape": model_shape,
            "record": record,  # rebuilds the step's metrics line if a kill tore it
        }
        state.checkpoints.save(done, model, optimizer, metadata)
