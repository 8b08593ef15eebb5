"""One member of a pack (``training/pack.py``): its own run folder, written as an unpacked run
writes it (the notes, metrics records, checkpoints and summary.json of ``loop._train_locked``),
its running loss, and its failure or skipped steps when a loss or gradient is not finite."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from reasonlab.core.errors import RunFailed
from reasonlab.runs.metrics import finite_record
from reasonlab.runs.summary import RunSummary
from reasonlab.tasks.base import sample_probes
from reasonlab.training.evaluation import evaluate
from reasonlab.training.loop import WARNING_PREFIX, learning_rate, run_notes
from reasonlab.training.nonfinite import nonfinite_failure
from reasonlab.training.resume import prepare_resume
from reasonlab.training.state import Training, end_summary, start_summary


@dataclass
class Member:
    state: Training
    name: str
    active: bool = True  # still training (not failed)
    loss_sum: float = 0.0
    loss_count: int = 0
    summary: RunSummary | None = None
    error: str | None = None
    failed_step: int | None = None
    closed: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    sampled: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.state.history.records

    def after_step(self, step: int, loss_value: float, finite: bool, units: int) -> None:
        """The bookkeeping of training step ``step`` for this member (``loop._loop``'s): the
        running loss, or a skipped step, or the member stopped as failed."""
        state = self.state
        if finite:
            self.loss_sum, self.loss_count = self.loss_sum + loss_value, self.loss_count + 1
        elif state.config.train.on_nonfinite == "skip_step":
            state.skipped.append(step + 1)
        else:
            self.fail(nonfinite_failure(state, step + 1, loss_value))
            return
        state.tokens_seen += units
        state.history.step = step + 1

    def fail(self, error: RunFailed) -> None:
        """Stops this member (the others go on) and writes its summary as failed."""
        print(f"error: {error}", file=sys.stderr)
        self.active = False
        self.error, self.failed_step = str(error), error.step
        close_member(self, "failed")

    def log_evaluation(self, step: int, loss: float | None) -> dict[str, Any]:
        state = self.state
        config = state.config
        probes = state.data.probes if step == config.train.steps else self.sampled
        accuracies = evaluate(
            state.model, probes, config.eval.batch_size, state.device, state.autocast
        )
        record = finite_record(
            {
                "step": step,
                **accuracies,
                "loss": loss,
                "lr": learning_rate(max(step - 1, 0), config.train),
                "tokens": state.tokens_seen,
                "elapsed_s": state.elapsed(),
            }
        )
        state.run.append_metrics(record)
        state.history.records.append(record)
        if state.tracking is not None:
            state.tracking.log(record)
        return record

    def evaluate_and_save(self, done: int) -> None:
        """The evaluation after step ``done`` and its checkpoint (the weights and the optimizer
        state must already be in the member's model and torch optimizer)."""
        mean_loss = round(self.loss_sum / self.loss_count, 6) if self.loss_count else None
        record = self.log_evaluation(done, mean_loss)
        self.loss_sum, self.loss_count = 0.0, 0
        metadata = {
            "elapsed_s": record["elapsed_s"],
            "tokens": self.state.tokens_seen,
            "model_shape": self.state.data.io().shape(),
            "record": record,
        }
        try:
            self.state.checkpoints.save(done, self.state.model, self.state.optimizer, metadata)
        except RunFailed as error:
            self.fail(error)


def open_member(member: Member, resume: bool, pack_note: str) -> None:
    """Creates (or restores, with ``resume``) the member's run folder and writes its first
    summary, as ``loop._train_locked`` does for a run."""
    state = member.state
    config, run, data = state.config, state.run, state.data
    notes = run_notes(state)
    fingerprint = data.fingerprint()
    if resume:
        notes = prepare_resume(state, fingerprint, notes, False, None)
    else:
        run.create(config, data.vocab)
    if pack_note not in notes:
        notes.append(pack_note)
    for note in notes:
        if note.startswith(WARNING_PREFIX):
            print(f"{run.path}: {note}", file=sys.stderr)
    member.sampled = data.probes
    if config.eval.sample is not None:
        member.sampled = sample_probes(data.probes, config.eval.sample, config.train.seed)
    member.summary = start_summary(state, notes, fingerprint)


def close_member(member: Member, status: str) -> None:
    """Writes the member's final summary.json (``status``: completed, failed, interrupted)."""
    state, summary = member.state, member.summary
    member.closed = True
    if summary is None:  # failed before its folder was opened
        member.result = {"status": "failed", "error": member.error}
        return
    final = end_summary(state, summary, status, member.error, member.failed_step)
    final.write_if_possible(state.run.summary_path)
    member.result = final.as_json()
    if state.tracking is not None:
        state.tracking.finish(member.result, status)
        state.tracking = None
