"""Training progress: the step clock and its ETA, the estimate printed after the first timed steps,
plain lines where stdout is no terminal, the live bar at 80 columns, and that progress never
changes a training result. A fake clock stands in for time, so nothing here waits."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from helpers import read_metrics, tiny_config, without_elapsed
from reasonlab.training.loop import train
from reasonlab.training.progress import (
    MIN_TIMED_S,
    TIMED_STEPS,
    Progress,
    StepClock,
    clock_time,
    current_run,
    duration,
)

HEADLINE = ["test_inferred_iid", "test_inferred_ood"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def metrics(step: int, loss: float | None = 0.5) -> dict:
    return {
        "step": step,
        "loss": loss,
        "test_inferred_iid": 0.25,
        "test_inferred_ood": 0.0,
        "id_atomic": 0.75,
        "elapsed_s": 61.0,
    }


def drive(
    progress: Progress,
    clock: FakeClock,
    to_step: int,
    every: int,
    step_s: float,
    eval_s: float,
    from_step: int = 0,
) -> None:
    """What the training loop does, with fixed step and evaluation durations."""
    if from_step == 0:
        progress.evaluating(0)
        clock.now += eval_s
        progress.evaluated(metrics(0, loss=None))
    for step in range(from_step + 1, to_step + 1):
        clock.now += step_s
        progress.step_done(step)
        if step % every == 0 or step == progress.total:
            progress.evaluating(step)
            clock.now += eval_s
            progress.evaluated(metrics(step))


def plain_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=80)


def make(
    console: Console | None,
    clock: FakeClock,
    total: int = 8000,
    every: int = 100,
    device: str = "cpu",
    enabled: bool = True,
) -> Progress:
    return Progress(
        enabled,
        total,
        0,
        HEADLINE,
        run="runs/x",
        eval_every=every,
        device=device,
        console=console,
        clock=clock,
    )


# ----------------------------------------------------------------------------- the clock


def test_the_step_rate_leaves_out_evaluations_and_the_first_step():
    fake = FakeClock()
    clock = StepClock(total=100, start=0, eval_every=10, clock=fake)
    clock.eval_started()
    fake.now += 50  # the step-0 evaluation
    clock.eval_done(0)
    fake.now += 30  # the first step pays one-off set-up costs
    clock.step_done(1)
    assert clock.seconds_per_step() == 30  # the only measure so far
    for step in range(2, 13):
        fake.now += 2
        clock.step_done(step)
        if step == 10:
            clock.eval_started()
            fake.now += 7
            clock.eval_done(10)
    assert clock.seconds_per_step() == pytest.approx(2.0)
    assert clock.seconds_per_eval() == pytest.approx(28.5)
    # 88 steps and the evaluations at 20, 30, ..., 100 are left
    assert clock.evals_left() == 9
    assert clock.eta() == pytest.approx(88 * 2 + 9 * 28.5)


def test_an_evaluation_due_at_the_current_step_is_counted_until_it_ran():
    fake = FakeClock()
    clock = StepClock(total=25, start=0, eval_every=10, clock=fake)
    for step in range(1, 21):
        fake.now += 1
        clock.step_done(step)
    assert clock.evals_left() == 2  # 20 (due now) and 25, the last step
    clock.eval_started()
    clock.eval_done(20)
    assert clock.evals_left() == 1


def test_no_eta_before_a_step_is_timed():
    clock = StepClock(total=10, start=0, eval_every=5, clock=FakeClock())
    assert clock.eta() is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(45, "45s"), (725, "12m 5s"), (22_230, "6h 10m"), (183_600, "2d 3h")],
)
def test_durations_read_like_people_write_them(seconds, text):
    assert duration(seconds) == text


# ----------------------------------------------------------------------------- the estimate


def estimate_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("estimate:")]


def test_the_estimate_is_printed_once_after_the_timed_steps_and_asks_for_a_gpu_on_a_cpu():
    fake, console = FakeClock(), plain_console()
    progress = make(console, fake)
    drive(progress, fake, to_step=TIMED_STEPS, every=100, step_s=2.6, eval_s=30)
    assert estimate_lines(console.file.getvalue()) == []  # only the first step is timed yet
    drive(progress, fake, to_step=300, every=100, step_s=2.6, eval_s=30, from_step=TIMED_STEPS)
    [line] = estimate_lines(console.file.getvalue())
    # at step 6: 45.6 s spent; left: 7994 steps of 2.6 s and 80 evaluations of 30 s
    assert line.startswith(f"estimate: ~{duration(45.6 + 7994 * 2.6 + 80 * 30)} for 8000 steps")
    assert "2.6 s/step over steps 2-6" in line
    assert "80 evaluations of 30 s" in line
    assert "meant for a GPU" in line


@pytest.mark.parametrize(("device", "step_s"), [("cuda", 2.6), ("cpu", 0.05)])
def test_no_gpu_advice_on_a_gpu_or_for_a_short_job(device, step_s):
    fake, console = FakeClock(), plain_console()
    progress = make(console, fake, device=device)
    drive(progress, fake, to_step=100, every=100, step_s=step_s, eval_s=1)
    [line] = estimate_lines(console.file.getvalue())
    assert "GPU" not in line


def test_fast_steps_are_timed_for_seconds_before_the_estimate():
    """Five steps of 0.25 s are too few to estimate from (a loaded machine's first steps were
    7x off): the estimate waits for MIN_TIMED_S seconds of steps and says it is one."""
    fake, console = FakeClock(), plain_console()
    progress = make(console, fake, total=2000, every=1000)
    drive(progress, fake, to_step=12, every=1000, step_s=0.25, eval_s=4)
    assert estimate_lines(console.file.getvalue()) == []  # 11 steps: 2.75 s timed
    drive(progress, fake, to_step=100, every=1000, step_s=0.25, eval_s=4, from_step=12)
    [line] = estimate_lines(console.file.getvalue())
    assert f"over steps 2-{1 + int(MIN_TIMED_S / 0.25)}" in line
    # at step 13: 4 s of evaluation and 3.25 s of steps; 1987 steps and 2 evaluations left
    assert line.startswith(f"estimate: ~{duration(7.25 + 1987 * 0.25 + 2 * 4)} for 2000 steps")
    assert "from what was measured so far" in line and "load changes it" in line


def test_evaluations_not_yet_timed_are_said_and_not_counted():
    fake, console = FakeClock(), plain_console()
    progress = Progress(
        True,
        100,
        40,
        HEADLINE,
        run="runs/x",
        eval_every=50,
        device="cpu",
        console=console,
        clock=fake,
    )
    drive(progress, fake, to_step=48, every=50, step_s=1, eval_s=0, from_step=40)
    [line] = estimate_lines(console.file.getvalue())
    assert "2 evaluations not yet timed, not counted" in line


def test_a_resumed_job_estimates_the_steps_it_has_left():
    fake, console = FakeClock(), plain_console()
    progress = Progress(
        True,
        100,
        40,
        HEADLINE,
        run="runs/x",
        eval_every=10,
        device="cpu",
        console=console,
        clock=fake,
    )
    drive(progress, fake, to_step=50, every=10, step_s=1, eval_s=0, from_step=40)
    [line] = estimate_lines(console.file.getvalue())
    assert "for steps 41-100" in line and "over steps 42-46" in line


# ----------------------------------------------------------------------------- the display


def test_without_a_terminal_one_plain_line_per_evaluation():
    fake, console = FakeClock(), plain_console()
    progress = make(console, fake, total=20, every=10)
    drive(progress, fake, to_step=20, every=10, step_s=3, eval_s=2)
    progress.close()
    lines = [line for line in console.file.getvalue().splitlines() if "estimate" not in line]
    assert [line.split("  ")[0] for line in lines] == [
        "runs/x: step 0/20",
        "runs/x: step 10/20",
        "runs/x: step 20/20",
    ]
    step_10 = lines[1].split("  ")
    assert step_10[1:] == [
        "loss 0.500",
        "test_inferred_iid 0.25",
        "test_inferred_ood 0.00",
        "elapsed 0:01:01",
        f"eta {clock_time(10 * 3 + 2)}",  # 10 steps of 3 s, one evaluation of 2 s
    ]
    assert lines[0].endswith("eta ?")  # nothing timed at step 0
    assert not any(mark in console.file.getvalue() for mark in ("\r", "\x1b", "━"))


def render(progress: Progress, width: int) -> str:
    out = Console(file=io.StringIO(), width=width, color_system=None)
    out.print(progress.bar.get_renderable())
    return out.file.getvalue()


@pytest.mark.parametrize("width", [80, 60])
def test_in_a_narrow_terminal_step_and_eta_stay_visible(width):
    fake = FakeClock()
    console = Console(file=io.StringIO(), width=width, force_terminal=True)
    progress = make(console, fake)
    drive(progress, fake, to_step=500, every=100, step_s=2.6, eval_s=30)
    eta = clock_time(progress.clock.eta())
    [line] = render(progress, width).splitlines()
    progress.close()
    assert len(line) <= width
    assert "500/8000" in line and f"eta {eta}" in line
    assert "loss 0.500" in line  # the metrics follow, cut short where the width ends


def test_the_live_bar_says_when_it_evaluates_and_shows_an_eta_after_the_first_step():
    fake = FakeClock()
    console = Console(file=io.StringIO(), width=100, force_terminal=True)
    progress = make(console, fake)
    progress.evaluating(0)
    assert "evaluating step 0" in render(progress, 100)
    fake.now += 30
    progress.evaluated(metrics(0, loss=None))
    fake.now += 2
    progress.step_done(1)
    line = render(progress, 100)
    progress.close()
    assert f"eta {clock_time(7999 * 2 + 80 * 30)}" in line
    assert "-:--:--" not in line


def test_disabled_progress_prints_nothing_but_keeps_the_run_record(capsys):
    fake = FakeClock()
    progress = make(None, fake, enabled=False)
    drive(progress, fake, to_step=12, every=5, step_s=1, eval_s=1)
    assert capsys.readouterr().out == ""
    record = current_run()
    assert record is not None and record.folder == Path("runs/x") and record.step == 12


def test_progress_changes_no_training_result(tmp_path, capsys, monkeypatch):
    """Dropout draws from the torch RNG every step: any RNG use by progress would change the
    metrics. Under pytest stdout is no terminal, so progress prints plain lines."""
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr("reasonlab.training.progress.MIN_TIMED_S", 0.0)  # a tiny run's steps
    quiet, shown = tmp_path / "quiet", tmp_path / "shown"
    train(tiny_config("model.dropout=0.1"), quiet)
    capsys.readouterr()
    train(tiny_config("model.dropout=0.1", "log.progress=true"), shown)
    out = capsys.readouterr().out
    assert without_elapsed(read_metrics(shown)) == without_elapsed(read_metrics(quiet))
    steps = [r["step"] for r in read_metrics(shown)]
    assert [line.split("  ")[0] for line in out.splitlines() if line.startswith(str(shown))] == [
        f"{shown}: step {step}/12" for step in steps
    ]
    assert len(estimate_lines(out)) == 1
