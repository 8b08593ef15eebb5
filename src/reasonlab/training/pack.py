"""Packed training: runs whose models have the same shape train together, in one process, as one
batched model.

Design
------
- **Stacked parameters.** Every member's model is built as its unpacked run builds it (the same
  seed, so the same initial weights); ``torch.func.stack_module_state`` stacks their parameters
  with a leading member dimension K. The forward is ``vmap(functional_call)`` over the members
  where the family supports it (the GPT); a family whose custom autograd functions vmap cannot
  batch (Mamba's causal convolution and scan) runs ``functional_call`` once per member on slices
  of the same stacked parameters ("loop" mode): one optimizer, one process, no vmap.
- **Own data stream.** Member k's batch is ``task_k.batch(step, batch_size, seed_k)``; batches
  of different lengths are right-padded to the longest (the models are causal, so padding after
  a position never changes it) and each member's loss is its own task's loss on its own, unpadded
  outputs (``loop.step_loss``). Backward runs once on the sum of the members' losses: the members
  share no parameter, so each gets exactly its own gradient.
- **Own optimizer and schedule.** ``pack_optim.StackedAdamW`` is torch AdamW's update with lr,
  weight decay and step counts per member (``loop.learning_rate`` of each member's own
  ``train`` section: lr, warm-up, schedule), the no-decay groups of ``make_optimizer``, and
  gradient clipping to each member's own norm.
- **Non-finite steps per member** (``training/nonfinite.py``'s rule): a member whose loss or
  gradient norm is not finite is stopped and written as ``failed`` in its own folder (or, with
  ``train.on_nonfinite: skip_step``, its step is skipped) while the others go on; a stopped
  member stays in the batched forward with a zero learning rate and no gradient.
- **Ordinary run folders.** Each member writes what an unpacked run writes (``RunDir``:
  config.json, vocab.json, metrics.jsonl, checkpoints through ``TrainingCheckpoints`` with the
  optimizer state in torch AdamW's layout, summary.json), evaluated by ``evaluation.evaluate`` on
  an ordinary model its stacked weights are copied into; so ``run --resume``, ``analyze``,
  ``export`` and ``reasonlab runs`` treat a member as any run. Its notes say it was packed.
- **A pack of one** is an ordinary run: ``train`` is called.
- **Resume.** A killed pack resumes as a pack when every member's newest checkpoint is at the
  same step (what a pack writes: its members share the evaluation and checkpoint schedule); each
  member is restored by ``resume.prepare_resume``, then stacked again. Members at different steps
  (a kill between two members' checkpoint writes) are refused here; the planner
  (``experiments/trials.py``) then resumes each of them alone.
- What must be equal inside a pack (``pack_key``): the model config and the model's input shape
  (vocabulary, sequence length), ``train.steps``, ``batch_size``, ``device``, ``precision``,
  ``grad_clip``, ``betas`` and the evaluation schedule (``eval.every``, ``eval.at_start``).
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

import reasonlab.training.loop as loop
from reasonlab.config import ConfigError, RunConfig
from reasonlab.runs.checkpoints import TrainingCheckpoints
from reasonlab.runs.folder import RunDir
from reasonlab.tasks import Task, build_task
from reasonlab.tasks.base import Batch
from reasonlab.training.pack_members import Member, close_member, open_member
from reasonlab.training.pack_optim import (
    StackedAdamW,
    check_members,
    decays,
    member_grad_norms,
)
from reasonlab.training.precision import autocast_context, precision_for_run
from reasonlab.training.progress import Progress
from reasonlab.training.state import History, Training
from reasonlab.training.tracking import require_trackers


def pack_key(config: RunConfig) -> str:
    """What runs of one pack must share (besides the model's input shape, known once the tasks
    are built): the model, steps, batch size, device, precision, clipping, betas and the
    evaluation schedule."""
    train, ev = config.train, config.eval
    shared = (
        config.model.model_dump(mode="json"),
        train.steps,
        train.batch_size,
        train.device,
        train.precision,
        train.grad_clip,
        list(train.betas),
        ev.every,
        ev.at_start,
    )
    return repr(shared)


def _refuse_mixed(configs: list[RunConfig], tasks: list[Task]) -> None:
    keys = [pack_key(c) for c in configs]
    for config, key in zip(configs, keys, strict=True):
        if key != keys[0]:
            raise ConfigError(
                f"--pack: {config.name} differs from {configs[0].name} in the model, train.steps, "
                "batch_size, device, precision, grad_clip, betas or eval schedule"
            )
    shapes = [t.io().shape() for t in tasks]
    for config, shape in zip(configs, shapes, strict=True):
        if shape != shapes[0]:
            raise ConfigError(
                f"--pack: {config.name}'s model reads {shape}, {configs[0].name}'s {shapes[0]} "
                "(the vocabulary or sequence length differs)"
            )
    if len({type(t).loss for t in tasks}) > 1:
        raise ConfigError("--pack: the members' tasks compute different losses")


class _Outputs(nn.Module):
    """Stands in for a member's model in ``loop.step_loss``: returns outputs computed already
    by the batched forward."""

    def __init__(self, outputs: Tensor) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, inputs: Tensor) -> Tensor:
        return self.outputs[:, : inputs.shape[1]]


def _padded(batches: list[Batch]) -> Tensor:
    """The members' inputs stacked (K, B, L, ...), right-padded with zeros to the longest L."""
    length = max(b.inputs.shape[1] for b in batches)
    rows = []
    for batch in batches:
        extra = length - batch.inputs.shape[1]
        pad = [0, 0] * (batch.inputs.dim() - 2) + [0, extra]
        rows.append(torch.nn.functional.pad(batch.inputs, pad) if extra else batch.inputs)
    return torch.stack(rows)


class Pack:
    """The stacked model of a pack's members: parameters (K, ...), forward, optimizer."""

    def __init__(self, members: list[Member]) -> None:
        models = [m.state.model for m in members]
        self.base = copy.deepcopy(models[0])
        params, self.buffers = stack_module_state(models)
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        named = dict(models[0].named_parameters())
        decay = {n for n in self.params if decays(named[n])}
        trains = [m.state.config.train for m in members]
        wd = torch.tensor([t.weight_decay for t in trains], dtype=torch.float32)
        self.optimizer = StackedAdamW(self.params, decay, wd, trains[0].betas)
        self.mode = "vmap" if members[0].state.config.model.kind == "gpt" else "loop"

    def forward(self, inputs: Tensor) -> Tensor:
        if self.mode == "vmap":

            def one(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
                return functional_call(self.base, (params, buffers), (x,))

            with warnings.catch_warnings():  # SDPA has no batching rule on some builds
                warnings.simplefilter("ignore", UserWarning)
                return vmap(one, randomness="different")(self.params, self.buffers, inputs)
        outputs = []
        for k in range(inputs.shape[0]):
            params = {n: p[k] for n, p in self.params.items()}
            buffers = {n: b[k] for n, b in self.buffers.items()}
            outputs.append(functional_call(self.base, (params, buffers), (inputs[k],)))
        return torch.stack(outputs)

    @torch.no_grad()
    def unstack(self, k: int, model: nn.Module) -> None:
        """Member ``k``'s weights copied into its ordinary model."""
        for name, param in model.named_parameters():
            param.copy_(self.params[name][k])


def pack_losses(pack: Pack, members: list[Member], batches: list[Batch]) -> Tensor:
    """Each member's loss (K,) on its own batch, from one batched forward."""
    outputs = pack.forward(_padded(batches))
    losses = [
        loop.step_loss(_Outputs(outputs[k]), m.state.data, batches[k])
        for k, m in enumerate(members)
    ]
    return torch.stack(losses)


def train_pack(
    configs: list[RunConfig],
    outs: list[str | Path],
    *,
    resume: bool = False,
    data: list[Task] | None = None,
) -> list[dict[str, Any]]:
    """Trains the runs ``configs`` into the folders ``outs`` as one pack (new folders, or, with
    ``resume``, the folders of a killed pack). Returns each member's summary.json (a member that
    failed is a summary with ``status: failed``, not an exception). A pack of one is ``train``."""
    if len(configs) != len(outs) or not configs:
        raise ConfigError("--pack: a pack needs one folder per run")
    if len(configs) == 1:
        one = data[0] if data else None
        return [loop.train(configs[0], outs[0], resume=resume, data=one)]
    for config in configs:  # a missing tracker package: refused before any work
        require_trackers(config.log.trackers())
    tasks = data if data is not None else [build_task(c.task) for c in configs]
    configs = [
        c.model_copy(update={"task": c.task.model_copy(update=t.resolved)}) if t.resolved else c
        for c, t in zip(configs, tasks, strict=True)
    ]
    _refuse_mixed(configs, tasks)
    runs = [RunDir(o) for o in outs]
    if resume:
        _refuse_uneven(runs)
    device = loop.resolve_device(configs[0].train.device)
    choices = {
        precision_for_run(c, device, t.io().max_seq_len).bf16
        for c, t in zip(configs, tasks, strict=True)
    }
    if len(choices) > 1:
        raise ConfigError(
            "--pack: these runs would train in different precisions (train.precision: auto "
            "decides by shape); pack them with train.precision set, or --pack off"
        )
    autocast = choices.pop()
    members = []
    for config, task, run in zip(configs, tasks, runs, strict=True):
        torch.manual_seed(config.train.seed)  # the initial weights of the run trained alone
        model = loop.build_task_model(config.model, task, device).to(device)
        optimizer = loop.make_optimizer(model, config.train)
        state = Training(
            config,
            run,
            task,
            model,
            optimizer,
            device,
            autocast,
            TrainingCheckpoints(run, config),
            History(),
        )
        members.append(Member(state, name=config.name or str(run.path)))
    for member in members:  # only now, every member built, touch the folders
        if resume:
            member.state.run.load_config()
            member.state.run.check_writable()
        else:
            member.state.run.claim()
    with ExitStack() as locks:
        for member in members:
            locks.enter_context(member.state.run.lock())
        return _train_locked(members, resume)


def _refuse_uneven(runs: list[RunDir]) -> None:
    steps = {str(r.path): (r.checkpoint_steps() or [0])[-1] for r in runs}
    if len(set(steps.values())) > 1:
        raise ConfigError(
            f"--pack: the members' newest checkpoints stand at different steps ({steps}); "
            "resume each alone"
        )


def _train_locked(members: list[Member], resume: bool) -> list[dict[str, Any]]:
    names = [m.name for m in members]
    for member in members:
        open_member(member, resume, f"trained in a pack of {len(members)}: {', '.join(names)}")
    starts = {m.state.start_step for m in members}
    if len(starts) > 1:
        raise ConfigError(f"--pack: members resumed at different steps {sorted(starts)}")
    pack = Pack(members)
    for k, member in enumerate(members):
        pack.optimizer.import_member(k, member.state.model, member.state.optimizer)
    first = members[0].state
    progress = Progress(
        first.config.log.progress,
        first.config.train.steps,
        first.start_step,
        first.data.headline_probes(),
        run=Path(f"pack of {len(members)}"),
        eval_every=first.config.eval.every,
        device=first.device.type,
    )
    for member in members:
        member.state.progress = progress
        member.state.started = time.perf_counter()
    status = "failed"
    try:
        for member in members:  # one tracked run per member, grouped by study or sweep
            member.state.tracking = loop.open_tracking_of(member.state)
        _loop(pack, members, progress)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as exc:
        for member in members:
            member.error = member.error or f"{type(exc).__name__}: {exc}"
        raise
    finally:
        progress.close()
        for member in members:
            if not member.closed:
                close_member(member, status)
    return [m.result for m in members]


def _loop(pack: Pack, members: list[Member], progress: Progress) -> None:
    first = members[0].state
    train_cfg, eval_cfg, device = first.config.train, first.config.eval, first.device
    context = autocast_context(device, first.autocast)
    if first.start_step == 0 and eval_cfg.at_start:
        for member in members:
            member.log_evaluation(0, None)
    for step in range(first.start_step, train_cfg.steps):
        lrs = torch.tensor([loop.learning_rate(step, m.state.config.train) for m in members])
        batches = [
            m.state.data.batch(step, train_cfg.batch_size, m.state.config.train.seed).to(device)
            for m in members
        ]
        for name in pack.params:
            pack.params[name].grad = None
        with context:
            losses = pack_losses(pack, members, batches)
        live = torch.tensor([m.active for m in members])
        torch.where(live.to(losses.device), losses, torch.zeros_like(losses)).sum().backward()
        norms = member_grad_norms(pack.params, train_cfg.grad_clip)
        values, finite = check_members(losses, norms)
        stepped = []
        for k, member in enumerate(members):
            stepped.append(member.active and finite[k])
            if member.active:
                member.after_step(step, values[k], finite[k], batches[k].units)
        pack.optimizer.step(lrs, torch.tensor(stepped))
        done = step + 1
        progress.step_done(done)
        if not any(m.active for m in members):
            return
        if done % eval_cfg.every and done != train_cfg.steps:
            continue
        for k, member in enumerate(members):
            if member.active:
                pack.unstack(k, member.state.model)
                pack.optimizer.export_member(k, member.state.model, member.state.optimizer)
                for group in member.state.optimizer.param_groups:
                    group["lr"] = float(lrs[k])
                member.evaluate_and_save(done)
        if members[0].records:
            progress.evaluated(members[0].records[-1])


def report_failures(results: list[dict[str, Any]]) -> None:
    """One line on stderr for each member of a pack that failed."""
    for result in results:
        if result.get("status") == "failed":
            print(f"error: {result.get('error')}", file=sys.stderr)
