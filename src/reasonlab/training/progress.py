"""What a run shows while it trains.

In a terminal: a live bar that keeps the step and the ETA on the left, so they stay visible at 80
columns (the loss and the headline accuracies come last and are the ones cut). Anywhere else (a
log file, a pipe): one plain line per evaluation. Either way, once enough steps are timed (at least
``TIMED_STEPS`` of them and ``MIN_TIMED_S`` seconds), one line estimating the job's duration from
the measured steps and evaluations only, saying that it is an estimate and when a long job on a
CPU is meant for a GPU.

Progress reads only a clock, never an RNG, so it cannot change a training result. It also keeps a
small record of the run being trained (its folder and the step reached), which the command line
reads to say what an interrupt saved and how to resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

TIMED_STEPS = 5  # steps timed for the estimate, after the first (which pays one-off set-up costs)
# ... and the seconds they must add up to at least: a handful of fast steps on a loaded machine
# measured 7x less than the job then took
MIN_TIMED_S = 3.0
LONG_ON_CPU_S = 30 * 60  # an estimate beyond this on a CPU says the configuration wants a GPU


# ------------------------------------------------------------------------- the run being trained


@dataclass
class RunRecord:
    folder: Path
    step: int  # the last optimizer step completed


_current: RunRecord | None = None


def current_run() -> RunRecord | None:
    """The run the latest ``Progress`` was made for (None before any, or after ``forget_run``)."""
    return _current


def forget_run() -> None:
    global _current
    _current = None


# ----------------------------------------------------------------------------- time


def duration(seconds: float) -> str:
    """Rounded for people: 45s, 12m 5s, 6h 10m, 2d 3h."""
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def clock_time(seconds: float) -> str:
    """h:mm:ss."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class StepClock:
    """Times one training job: seconds per optimizer step (evaluation time left out, the job's
    first step too once later steps are timed) and seconds per evaluation, for an ETA that counts
    both. ``clock`` is injectable so the arithmetic is testable without waiting."""

    def __init__(
        self,
        total: int,
        start: int,
        eval_every: int,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.total, self.start, self.eval_every, self.clock = total, start, eval_every, clock
        self.began = clock()
        self.step = start
        self.first_step_s: float | None = None
        self.timed_steps, self.timed_s = 0, 0.0
        self.evals, self.eval_s = 0, 0.0
        self.evaluated_step: int | None = None
        self._mark, self._eval_since_mark = self.began, 0.0
        self._eval_began: float | None = None

    def step_done(self, step: int) -> None:
        now = self.clock()
        seconds = now - self._mark - self._eval_since_mark
        self._mark, self._eval_since_mark, self.step = now, 0.0, step
        if self.first_step_s is None:
            self.first_step_s = seconds
        else:
            self.timed_steps, self.timed_s = self.timed_steps + 1, self.timed_s + seconds

    def eval_started(self) -> None:
        self._eval_began = self.clock()

    def eval_done(self, step: int) -> None:
        if self._eval_began is None:
            return
        seconds = self.clock() - self._eval_began
        self._eval_began = None
        self.evals, self.eval_s = self.evals + 1, self.eval_s + seconds
        self._eval_since_mark += seconds
        self.evaluated_step = step

    def seconds_per_step(self) -> float | None:
        if self.timed_steps:
            return self.timed_s / self.timed_steps
        return self.first_step_s

    def seconds_per_eval(self) -> float | None:
        return self.eval_s / self.evals if self.evals else None

    def is_eval_step(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.total

    def evals_left(self) -> int:
        """Evaluations still to run: at every multiple of ``eval_every`` after the current step
        and at the last step, plus the current step's own when it is due and not yet run."""
        step, total, every = self.step, self.total, self.eval_every
        later = total // every - step // every + (1 if total % every else 0)
        if step == total:
            later = 0
        due_now = self.is_eval_step(step) and self.evaluated_step != step and step > self.start
        return later + int(due_now)

    def eta(self) -> float | None:
        """Seconds left, or None before any step is timed."""
        per_step = self.seconds_per_step()
        if per_step is None:
            return None
        return (self.total - self.step) * per_step + self.evals_left() * (
            self.seconds_per_eval() or 0.0
        )

    def elapsed(self) -> float:
        return self.clock() - self.began


def estimate_ready(clock: StepClock) -> bool:
    """Whether enough steps are timed for the estimate: ``TIMED_STEPS`` after the first, which
    add up to ``MIN_TIMED_S`` seconds at least."""
    return clock.timed_steps >= TIMED_STEPS and clock.timed_s >= MIN_TIMED_S


def estimate_line(clock: StepClock, device: str) -> str | None:
    """One line with the job's estimated duration from the steps and evaluations measured so
    far (evaluations not yet timed are said and not counted)."""
    eta, per_step = clock.eta(), clock.seconds_per_step()
    if eta is None or per_step is None:
        return None
    total_s = clock.elapsed() + eta
    first, last = clock.start + 2, clock.start + 1 + clock.timed_steps
    span = f"{clock.total} steps" if clock.start == 0 else f"steps {clock.start + 1}-{clock.total}"
    rate = f"{per_step:.3g} s/step" if per_step >= 0.01 else f"{per_step * 1000:.3g} ms/step"
    per_eval = clock.seconds_per_eval()
    left = clock.evals_left()
    evals = (
        f"{left} evaluations of {per_eval:.3g} s"
        if per_eval is not None
        else f"{left} evaluations not yet timed, not counted"
    )
    line = (
        f"estimate: ~{duration(total_s)} for {span}, from what was measured so far ({rate} over "
        f"steps {first}-{last}; {evals}); the machine's load changes it"
    )
    if device == "cpu" and total_s > LONG_ON_CPU_S:
        line += (
            "; this configuration is meant for a GPU (on a CPU, use a smaller one, "
            "e.g. a study's --preset cpu)"
        )
    return line


# ----------------------------------------------------------------------------- the display


class Progress:
    """Progress of one training job: a live bar in a terminal, plain lines otherwise, silent when
    disabled (the run record and the clock are kept either way).

    The training loop calls ``step_done`` after every optimizer step, ``evaluating`` before an
    evaluation and ``evaluated`` with its metrics record after it, and ``close`` at the end."""

    def __init__(
        self,
        enabled: bool,
        total: int,
        start: int,
        headline: list[str],
        *,
        run: str | Path,
        eval_every: int,
        device: str = "cpu",
        console: Console | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        global _current
        _current = RunRecord(Path(run), start)
        self.run_record, self.headline, self.device = _current, headline, device
        self.total, self.start = total, start
        self.clock = StepClock(total, start, eval_every, clock)
        self.estimated = False
        self.console: Console | None = None
        self.bar: Any = None
        if not enabled:
            return
        from rich.console import Console

        self.console = console or Console()
        # A live display only where it is redrawn in place; a file would keep only its last frame.
        if self.console.is_terminal or self.console.is_jupyter:
            self.bar = _live_bar(self.console)
            self.task = self.bar.add_task("train", total=total, completed=start, timing="", info="")
            self.bar.start()

    # -- events from the training loop

    def step_done(self, step: int) -> None:
        self.run_record.step = step
        self.clock.step_done(step)
        if not self.estimated and estimate_ready(self.clock):
            self.estimated = True
            line = estimate_line(self.clock, self.device)
            if line is not None:
                self._print(line)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, timing=self._timing())

    def evaluating(self, step: int) -> None:
        self.clock.eval_started()
        if self.bar is not None:
            self.bar.update(self.task, info=f"evaluating step {step}")

    def evaluated(self, record: dict[str, Any]) -> None:
        step = record["step"]
        self.clock.eval_done(step)
        if self.console is None:
            return
        metrics = self._metrics(record)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, timing=self._timing(), info=metrics)
            return
        elapsed = record.get("elapsed_s")
        parts = [
            f"{self.run_record.folder}: step {step}/{self.total}",
            metrics,
            f"elapsed {clock_time(elapsed)}" if elapsed is not None else "",
            f"eta {self._eta_text()}",
        ]
        self._print("  ".join(part for part in parts if part))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    # -- text

    def _metrics(self, record: dict[str, Any]) -> str:
        parts = [f"loss {record['loss']:.3f}"] if record.get("loss") is not None else []
        parts += [f"{k} {record[k]:.2f}" for k in self.headline if record.get(k) is not None]
        return "  ".join(parts)

    def _eta_text(self) -> str:
        eta = self.clock.eta()
        return "?" if eta is None else clock_time(eta)

    def _timing(self) -> str:
        return f"{clock_time(self.clock.elapsed())} eta {self._eta_text()}"

    def _print(self, line: str) -> None:
        if self.console is None:
            return
        if self.bar is not None:  # above the live bar
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        self.console.file.write(line + "\n")
        self.console.file.flush()


def _live_bar(console: Console):
    """Columns in order of importance, left to right. Only the metrics column may shrink (rich
    narrows wrappable columns first), and it cuts its text with an ellipsis instead of wrapping,
    so at 80 columns the step and the ETA stay whole."""
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn
    from rich.progress import Progress as RichProgress
    from rich.table import Column
    from rich.text import Text

    class MetricsColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(task.fields["info"], no_wrap=True, overflow="ellipsis")

    fixed = Column(no_wrap=True)
    return RichProgress(
        TextColumn("[bold]train", table_column=fixed),
        MofNCompleteColumn(table_column=fixed),
        BarColumn(bar_width=12, table_column=fixed),
        TextColumn("{task.fields[timing]}", table_column=fixed),
        MetricsColumn(table_column=Column(no_wrap=False)),
        console=console,
        transient=False,
    )
