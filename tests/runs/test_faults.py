"""Fault injection: what a run folder goes through on a failing disk, after damage, and when
training diverges. Each fault gives its documented exit code and one line, and the folder is left
resumable (to the metrics of an uninterrupted run) or clearly marked, with no record lost.

The file system is faulted in process (``io.open`` and ``open`` fail for chosen files, as a full
or read-only disk fails a write), and once for real on a 600 KB tmpfs where mounting is allowed.
docs/RELIABILITY.md lists each fault with its test.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import reasonlab.training.loop as train_module
from helpers import (
    TINY_YAML,
    interrupt_at_loss,
    one_line_error,
    run_cli,
    snapshot,
    tiny_config,
    without_elapsed,
)
from reasonlab.runs.folder import RunDir, hold_lock
from reasonlab.training.loop import train


def strict_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl read by a strict JSON reader: bare NaN or Infinity tokens fail."""

    def refuse(token: str) -> None:
        raise ValueError(f"bare {token} in metrics.jsonl")

    text = (run_dir / "metrics.jsonl").read_text()
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    """The metrics of the uninterrupted tiny run (12 steps, evaluated every 2)."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    train(tiny_config(), out)
    return without_elapsed(strict_records(out))


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """The tiny run stopped by Ctrl-C after step 6: checkpoints of steps 2, 4 (log-spaced) and
    6 (the latest), metrics up to step 6. Tests copy it before they damage it."""
    out = tmp_path_factory.mktemp("faults") / "stopped"
    with pytest.MonkeyPatch.context() as patch:
        interrupt_at_loss(patch, 7)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(), out)
    assert RunDir(out).checkpoint_steps() == [2, 4, 6]
    return out


@pytest.fixture
def run_copy(stopped, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(stopped, copy)
    return copy


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


def resumes_to_reference(run: Path, reference: list[dict], capsys, *extra: str) -> None:
    code, _, err = run_cli(["run", "--resume", run, *extra], capsys)
    assert code == 0, err
    assert without_elapsed(strict_records(run)) == reference
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


# ----------------------------------------------------------------------------- damaged checkpoints


def flip_payload(path: Path) -> None:
    """Overwrites 4 bytes in the middle of a safetensors file's tensor data (not its header)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    middle = start + (len(data) - start) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))


def test_a_flipped_payload_is_refused_and_the_newest_intact_checkpoint_resumes(
    run_copy, reference, capsys
):
    newest = RunDir(run_copy).checkpoint_path(6)
    flip_payload(newest)
    damaged = newest.read_bytes()
    before = snapshot(run_copy)
    code, _, err = run_cli(["run", "--resume", run_copy], capsys)
    assert code == 2
    line = one_line_error(err)
    assert str(newest) in line and "damaged" in line and "--from-step 4" in line
    assert snapshot(run_copy) == before
    # resuming from the newest intact checkpoint keeps the damaged file aside, untouched
    resumes_to_reference(run_copy, reference, capsys, "--from-step", "4")
    assert newest.with_name(newest.name + ".damaged").read_bytes() == damaged


@pytest.mark.parametrize("command", ["export", "analyze"])
def test_every_reader_of_a_checkpoint_verifies_it(run_copy, tmp_path, capsys, command):
    newest = RunDir(run_copy).checkpoint_path(6)
    flip_payload(newest)
    args = {
        "export": ["export", run_copy, tmp_path / "hf"],
        "analyze": ["analyze", "logit-lens", run_copy, "--checkpoint", "6"],
    }[command]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert str(newest) in one_line_error(err) and "damaged" in err


def test_from_step_refuses_when_a_newer_checkpoint_is_intact(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = run_cli(["run", "--resume", run_copy, "--from-step", "4"], capsys)
    assert code == 2
    assert "step 6 is newer and intact" in one_line_error(err)
    assert snapshot(run_copy) == before


def test_a_nan_weight_saved_with_a_valid_checksum_is_refused(run_copy, capsys):
    run = RunDir(run_copy)
    tensors, metadata = run.load_checkpoint(6)
    name = next(k for k in tensors if k.startswith("model.") and tensors[k].dim() == 2)
    tensors[name][0, 0] = float("nan")
    metadata.pop("payload_sha256")
    metadata.pop("step")
    run.save_checkpoint(6, tensors, metadata)
    code, _, err = run_cli(["run", "--resume", run_copy], capsys)
    assert code == 2
    assert "non-finite" in one_line_error(err)


def test_checkpoints_without_a_checksum_still_load(run_copy):
    """Checkpoints written before the checksum existed are read as before."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = RunDir(run_copy).checkpoint_path(6)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    metadata.pop("payload_sha256")
    save_file(load_file(str(path)), str(path), metadata)
    RunDir(run_copy).load_model(6)


def test_an_edited_config_json_is_refused(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["train"]["lr"] = 0.007
    (run_copy / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(["run", "--resume", run_copy], capsys)
    assert code == 2
    assert "config.json: changed since the run wrote it" in one_line_error(err)


# ----------------------------------------------------------------------------- non-finite loss


def nan_loss_at(monkeypatch, *calls: int) -> None:
    """The training loss is NaN at these calls of the loop's loss (1-based): what a diverging
    run produces, at a known step."""
    real, count = train_module.step_loss, []

    def poisoned(*args):
        count.append(1)
        loss = real(*args)
        return loss * float("nan") if len(count) in calls else loss

    monkeypatch.setattr(train_module, "step_loss", poisoned)


def test_a_nan_loss_stops_the_run_marked_failed_with_its_step(
    config_file, tmp_path, monkeypatch, capsys
):
    nan_loss_at(monkeypatch, 5)
    out = tmp_path / "run"
    code, _, err = run_cli(["run", config_file, "--out", out], capsys)
    assert code == 1
    line = one_line_error(err)
    assert "stopped at step 5" in line and "checkpoint of step 4 kept" in line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_step"] == 5
    assert "resume" not in summary  # resuming would diverge again: the line says what to change
    assert [r["step"] for r in strict_records(out)][-1] == 4
    tensors, _ = RunDir(out).load_checkpoint(RunDir(out).checkpoint_steps()[-1])
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_skip_step_leaves_out_the_nonfinite_steps_and_counts_them(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, 5, 6)
    out = tmp_path / "run"
    summary = train(tiny_config("train.on_nonfinite=skip_step"), out)
    assert summary["status"] == "completed"
    assert summary["skipped_steps"] == 2 and summary["skipped_at"] == [5, 6]
    records = strict_records(out)
    at_six = next(r for r in records if r["step"] == 6)
    assert at_six["loss"] is None  # both steps of that interval were skipped
    assert all(math.isfinite(r["loss"]) for r in records if r["step"] not in (0, 6))


def test_a_run_diverging_for_real_fails_with_strict_json_metrics(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", config_file, "--out", out, "--set", "train.lr=1.0e30"]
    code, _, err = run_cli([*args, "--set", "train.grad_clip=0"], capsys)
    assert code == 1
    assert "stopped at step" in one_line_error(err)
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    strict_records(out)


def test_metrics_records_name_the_values_written_as_null(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"step": 3, "loss": float("nan"), "test": float("inf"), "ok": 0.5})
    (record,) = strict_records(tmp_path)
    assert record == {
        "step": 3,
        "loss": None,
        "test": None,
        "ok": 0.5,
        "nonfinite": {"loss": "nan", "test": "inf"},
    }


# ----------------------------------------------------------------------------- damaged metrics


def test_each_damaged_metrics_line_is_refused_or_repaired(stopped, tmp_path, reference, capsys):
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    for index in range(len(lines)):
        run = tmp_path / f"line-{index + 1}"
        shutil.copytree(stopped, run)
        damaged = [*lines]
        damaged[index] = damaged[index][: len(damaged[index]) // 2]
        (run / "metrics.jsonl").write_text("\n".join(damaged) + "\n")
        last = index == len(lines) - 1
        if not last:
            before = snapshot(run)
            code, _, err = run_cli(["run", "--resume", run], capsys)
            assert code == 2
            assert f"line {index + 1} is not a metrics record" in one_line_error(err)
            assert snapshot(run) == before
        else:  # a torn last line: the record of the checkpoint's own step is rebuilt
            resumes_to_reference(run, reference, capsys)


def test_a_record_whose_step_is_not_a_number_is_refused(run_copy, capsys):
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"step": "abc"})
    (run_copy / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(["run", "--resume", run_copy], capsys)
    assert code == 2 and "line 2" in one_line_error(err)


def test_a_cut_record_of_the_newest_checkpoint_step_is_rebuilt(run_copy, reference, capsys):
    text = (run_copy / "metrics.jsonl").read_text()
    (run_copy / "metrics.jsonl").write_text(text[:-15])  # the step-6 record, torn
    resumes_to_reference(run_copy, reference, capsys)


# ----------------------------------------------------------------------------- damaged summary


@pytest.mark.parametrize("content", ["[1, 2]", '{"status": "runn'])
def test_a_damaged_summary_says_what_to_do_and_the_resume_rebuilds_it(
    run_copy, reference, capsys, content
):
    (run_copy / "summary.json").write_text(content)
    before = snapshot(run_copy)
    code, _, err = run_cli(["run", "--resume", run_copy], capsys)
    assert code == 2
    assert "move it aside and resume again" in one_line_error(err)
    assert snapshot(run_copy) == before
    (run_copy / "summary.json").unlink()
    resumes_to_reference(run_copy, reference, capsys)


# ----------------------------------------------------------------------------- a failing disk


class FailingDisk:
    """Makes writes of files whose name contains ``part`` fail with ``code`` after ``after``
    successful ones: half the bytes are written, then the OSError (as a full disk does)."""

    def __init__(self, monkeypatch, root: Path, part: str, after: int = 0, code=errno.ENOSPC):
        self.root, self.part, self.after, self.code = str(root), part, after, code
        self.opened = 0
        real = io.open

        def faulty_open(file, mode="r", *args, **kwargs):
            handle = real(file, mode, *args, **kwargs)
            name = str(file)
            writing = any(flag in mode for flag in "wax") and "+" not in mode
            if writing and name.startswith(self.root) and part in Path(name).name:
                self.opened += 1
                if self.opened > self.after and code != errno.ENOSPC:  # refused at open
                    handle.close()
                    Path(name).unlink(missing_ok=True)
                    raise OSError(code, os.strerror(code), name)
                if self.opened > self.after:
                    return _FailingWrites(handle, self.code)
            return handle

        monkeypatch.setattr(io, "open", faulty_open)
        monkeypatch.setattr(builtins, "open", faulty_open)
        if code == errno.EROFS:  # the file system says so too
            real_statvfs = os.statvfs

            def read_only(path):
                mounted = real_statvfs(path)
                if not str(path).startswith(self.root):
                    return mounted
                return SimpleNamespace(f_flag=mounted.f_flag | os.ST_RDONLY)

            monkeypatch.setattr(os, "statvfs", read_only)


class _FailingWrites:
    def __init__(self, handle, code: int):
        self.handle, self.code = handle, code

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(self.code, os.strerror(self.code))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.parametrize("part", ["vocab.json", "config.json"])
def test_a_full_disk_while_a_run_is_created_leaves_no_folder(
    config_file, tmp_path, monkeypatch, capsys, part
):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        FailingDisk(patch, tmp_path, part)
        code, _, err = run_cli(["run", config_file, "--out", out], capsys)
    assert code == 2
    line = one_line_error(err)
    assert part in line and "No space left on device" in line
    assert not out.exists()  # nothing that both resume and a new run would refuse
    code, _, err = run_cli(["run", config_file, "--out", out], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("part", "after"),
    [("summary.json", 0), ("metrics.jsonl", 3), ("step-", 1)],
    ids=["summary-at-start", "metrics-append", "checkpoint"],
)
def test_a_full_disk_during_training_leaves_a_resumable_run(
    config_file, tmp_path, monkeypatch, reference, capsys, part, after
):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        FailingDisk(patch, tmp_path, part, after)
        code, _, err = run_cli(["run", config_file, "--out", out], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "No space left on device" in line and ".tmp-" not in line
    if part != "summary.json":  # the failure is recorded where summary.json can be written
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "failed" and "No space left" in summary["error"]
    assert not list(out.rglob(".*.tmp-*"))
    resumes_to_reference(out, reference, capsys)


def test_a_full_disk_at_the_final_summary_writes_it_in_place(
    config_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        FailingDisk(patch, tmp_path, "summary.json", after=1)
        code, _, err = run_cli(["run", config_file, "--out", out], capsys)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_a_read_only_file_system_refuses_the_resume_and_changes_nothing(
    run_copy, monkeypatch, capsys
):
    before = snapshot(run_copy)
    with monkeypatch.context() as patch:
        FailingDisk(patch, run_copy, "", code=errno.EROFS)
        code, _, err = run_cli(["run", "--resume", run_copy], capsys)
    assert code == 2
    assert "Read-only file system" in one_line_error(err)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("command", ["data", "export", "analyze"])
def test_file_system_errors_of_every_command_are_one_line(
    run_copy, config_file, tmp_path, monkeypatch, capsys, command
):
    args = {
        "data": ["data", config_file, "--out", tmp_path / "data"],
        "export": ["export", run_copy, tmp_path / "hf"],
        "analyze": ["analyze", "logit-lens", run_copy],
    }[command]
    with monkeypatch.context() as patch:
        FailingDisk(patch, tmp_path, "", code=errno.ENOSPC)
        code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "No space left on device" in one_line_error(err)


@contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A real tmpfs of ``size``, mounted in a folder of its own (outside pytest's temporary
    folders, which another pytest process may clean up) and always unmounted; skips the test where
    mounting is not allowed."""
    disk = Path(tempfile.mkdtemp(prefix="reasonlab-tmpfs-"))
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)]
    if shutil.which("mount") is None or subprocess.run(command, capture_output=True).returncode:
        disk.rmdir()
        pytest.skip("mounting a tmpfs is not allowed here (the mocked disk tests cover it)")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)  # busy: detach
        disk.rmdir()


def test_a_real_full_tmpfs_gives_one_line_and_a_resumable_run(
    config_file, tmp_path, reference, capsys
):
    moved = tmp_path / "moved"
    with tmpfs("200k") as disk:
        out = disk / "run"
        code, _, err = run_cli(["run", config_file, "--out", out], capsys)
        assert code == 2
        assert "No space left on device" in one_line_error(err)
        if out.exists():
            shutil.copytree(out, moved)
    if moved.exists():  # what the full disk kept resumes once there is room
        if (moved / "config.json").exists():
            resumes_to_reference(moved, reference, capsys)
        else:
            assert not any(moved.iterdir())


# ----------------------------------------------------------------------------- concurrent studies


def test_a_study_started_on_a_folder_in_use_says_so(tmp_path, capsys):
    folder = tmp_path / "study"
    (folder / "runs").mkdir(parents=True)  # what a study starting at the same instant has made
    with hold_lock(folder, "study folder"):
        code, _, err = run_cli(["study", "cot-twohop", "--out", folder], capsys)
    assert code == 2
    assert "in use by another reasonlab process" in one_line_error(err)


def test_a_real_read_only_file_system_refuses_the_resume(stopped, capsys):
    with tmpfs("4m") as disk:
        shutil.copytree(stopped, disk / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        before = snapshot(disk / "run")
        code, _, err = run_cli(["run", "--resume", disk / "run"], capsys)
        assert code == 2
        assert "Read-only file system" in one_line_error(err)
        assert snapshot(disk / "run") == before
