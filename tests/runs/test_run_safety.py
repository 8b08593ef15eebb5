"""Run-folder safety (issue 7, items 1-6, 9, 13): the writer's lock, data checks on resume,
dataset folders read in their own CoT pattern, safe run names, typed study variants, summaries
that say where a run stopped, and continuing a finished run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import (
    STUDY_TINY,
    TINY_RUN,
    interrupt_at_loss,
    one_line_error,
    run_cli,
    snapshot,
    tiny_config,
    tiny_task,
    without_elapsed,
)
from reasonlab.cli import main
from reasonlab.config import ConfigError
from reasonlab.runs.folder import RunDir, hold_lock
from reasonlab.runs.integrity import config_digest
from reasonlab.tasks import build_task, write_dataset
from reasonlab.training.loop import train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "finished"
    train(tiny_config(), out)
    return out


@pytest.fixture
def stopped_run(tmp_path) -> Path:
    """A run that stopped after 6 of 12 steps (its summary says running, as after a SIGKILL)."""
    out = tmp_path / "stopped"
    train(tiny_config("train.steps=6"), out)
    config = json.loads((out / "config.json").read_text())
    config["train"]["steps"] = 12
    (out / "config.json").write_text(json.dumps(config))
    summary = json.loads((out / "summary.json").read_text())
    summary.update(status="running", steps=12, config_sha256=config_digest(config))
    (out / "summary.json").write_text(json.dumps(summary))
    return out


# ----------------------------------------------------------------------------- 1. the lock


def test_a_locked_run_folder_refuses_a_second_writer_and_stays_unchanged(stopped_run, capsys):
    before = snapshot(stopped_run)
    with hold_lock(stopped_run):
        code, _, err = run_cli(["run", "--resume", stopped_run], capsys)
    assert code == 2
    line = one_line_error(err)
    assert str(stopped_run) in line and "in use by another reasonlab process" in line
    assert snapshot(stopped_run) == before
    # once the holder lets go, the same command resumes
    code, out, err = run_cli(["run", "--resume", stopped_run], capsys)
    assert code == 0, err
    assert "resuming at step 6" in err and "completed" in out


def test_a_new_run_into_a_locked_folder_is_refused(tmp_path, write_yaml, capsys):
    target = tmp_path / "new"
    target.mkdir()
    config = write_yaml(yaml.safe_dump(TINY_RUN))
    with hold_lock(target):
        code, _, err = run_cli(["run", config, "--out", target], capsys)
    assert code == 2 and "in use" in one_line_error(err)
    assert list(target.iterdir()) == []


def test_the_lock_dies_with_a_killed_process(tmp_path):
    """An OS lock, not a lock file: SIGKILL of the holder frees the folder at once."""
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from reasonlab.runs.folder import hold_lock
                with hold_lock(__import__('pathlib').Path({str(folder)!r})):
                    print('locked', flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="in use"), hold_lock(folder):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        with hold_lock(folder):
            pass
        assert list(folder.iterdir()) == []  # nothing left behind
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_running_process_holds_the_lock_end_to_end(tmp_path, write_yaml):
    """Two real processes: a second --resume while the first trains exits 2; the first goes on
    undisturbed (SIGTERM then stops it) and its metrics hold every step once."""
    long_run = json.loads(json.dumps(TINY_RUN))
    long_run["train"]["steps"] = 1_000_000  # far longer than the test lets it run
    long_run["eval"]["every"] = 50
    long_run["log"]["checkpoints"] = "none"
    config = write_yaml(yaml.safe_dump(long_run))
    out = tmp_path / "live"
    command = [sys.executable, "-m", "reasonlab"]
    first = subprocess.Popen([*command, "run", str(config), "--out", str(out)])
    try:
        deadline = time.monotonic() + 120
        while not (out / "summary.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(
            [*command, "run", "--resume", str(out)], capture_output=True, text=True, timeout=120
        )
        assert first.poll() is None, "the first run ended before the second could try"
        assert second.returncode == 2, second.stderr
        assert "in use by another reasonlab process" in second.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 130
    finally:
        first.kill()
        first.wait()
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_a_study_folder_is_locked(tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    with hold_lock(out, "study folder"):
        code, stdout, err = run_cli(
            ["study", "cot-twohop", "--out", out, "--set", "train.steps=2"], capsys
        )
    assert code == 2 and "study folder is in use" in one_line_error(err)
    assert stdout == ""  # no run named before the refusal


# ----------------------------------------------------------------------------- 2. CoT pattern


@pytest.mark.parametrize("written", ["interleaved", "none", "restated"])
def test_a_data_folder_is_read_in_the_pattern_it_was_written_in(tmp_path, written):
    folder = tmp_path / "data"
    write_dataset(tiny_task(cot=written), folder)
    generated = build_task(tiny_task(cot=written))
    # the folder is read with the config's default pattern (after_relations) left unset
    loaded = build_task(tiny_task(data_dir=str(folder)))
    assert loaded.resolved == {"cot": written}
    for name, probe in generated.probes.items():
        assert probe.given.equal(loaded.probes[name].given), name
        assert probe.stages == loaded.probes[name].stages, name
    assert generated.train_loss_mask.sum() == loaded.train_loss_mask.sum()


def test_a_contradicting_cot_setting_is_refused(tmp_path):
    folder = tmp_path / "data"
    write_dataset(tiny_task(cot="interleaved"), folder)
    with pytest.raises(ConfigError, match=r"^task\.cot: after_relations .* interleaved"):
        build_task(tiny_task(data_dir=str(folder), cot="after_relations"))


def test_the_run_records_the_detected_pattern(tmp_path):
    folder = tmp_path / "data"
    write_dataset(tiny_task(cot="interleaved"), folder)
    out = tmp_path / "run"
    train(tiny_config(f"task.data_dir={folder}", "train.steps=2"), out)
    assert RunDir(out).load_config().task.cot == "interleaved"


def test_a_folder_mixing_patterns_is_refused(tmp_path):
    folder = tmp_path / "data"
    write_dataset(tiny_task(cot="interleaved"), folder)
    items = json.loads((folder / "train.json").read_text())
    items.append({"input_text": "<e_0><r_1><r_2>", "target_text": "<e_0><r_1><r_2><e_3><e_4></a>"})
    (folder / "train.json").write_text(json.dumps(items))
    with pytest.raises(ConfigError, match="more than one CoT pattern"):
        build_task(tiny_task(data_dir=str(folder)))


# ----------------------------------------------------------------------------- 3. data fingerprint


def test_resume_refuses_data_that_changed_and_can_be_told_to_go_on(tmp_path, capsys):
    folder = tmp_path / "data"
    write_dataset(tiny_task(), folder)
    out = tmp_path / "run"
    train(tiny_config(f"task.data_dir={folder}", "train.steps=6"), out)
    # stopped at 6 of 12 steps
    config = json.loads((out / "config.json").read_text())
    config["train"]["steps"] = 12
    (out / "config.json").write_text(json.dumps(config))
    summary = json.loads((out / "summary.json").read_text())
    summary.update(status="running", config_sha256=config_digest(config))
    (out / "summary.json").write_text(json.dumps(summary))
    items = json.loads((folder / "train.json").read_text())
    (folder / "train.json").write_text(json.dumps(items[:-1]))
    before = snapshot(out)
    code, _, err = run_cli(["run", "--resume", out], capsys)
    assert code == 2
    line = one_line_error(err)
    recorded = summary["data_fingerprint"]
    assert recorded in line and "data_fingerprint" in line
    now = build_task(RunDir(out).load_config().task).fingerprint()
    assert now in line and now != recorded
    assert snapshot(out) == before
    code, _, err = run_cli(["run", "--resume", out, "--allow-data-change"], capsys)
    assert code == 0, err
    final = json.loads((out / "summary.json").read_text())
    assert final["status"] == "completed"
    assert any(recorded in note and now in note for note in final["notes"])


# ----------------------------------------------------------------------------- 4. data + export


def test_data_of_a_data_dir_config_writes_that_folder(tmp_path, write_yaml, capsys):
    folder = tmp_path / "data"
    write_dataset(tiny_task(cot="interleaved", khop=[3]), folder)
    config = write_yaml(yaml.safe_dump({"task": {"kind": "twohop", "data_dir": str(folder)}}))
    code, _, err = run_cli(["data", config, "--out", tmp_path / "copy"], capsys)
    assert code == 0, err
    for name in ("train.json", "valid.json", "test.json", "vocab.json"):
        assert (tmp_path / "copy" / name).read_bytes() == (folder / name).read_bytes()


def test_export_of_a_data_dir_run_writes_its_vocab(tmp_path, capsys):
    pytest.importorskip("transformers")
    folder = tmp_path / "data"
    write_dataset(tiny_task(), folder)
    out = tmp_path / "run"
    train(tiny_config(f"task.data_dir={folder}", "train.steps=2"), out)
    code, _, err = run_cli(["export", out, tmp_path / "hf"], capsys)
    assert code == 0, err
    exported = json.loads((tmp_path / "hf" / "reasonlab_vocab.json").read_text())
    assert exported == json.loads((folder / "vocab.json").read_text())
    assert exported == json.loads((out / "vocab.json").read_text())


# ----------------------------------------------------------------------------- 5. names


@pytest.mark.parametrize("name", ["../../escaped", "a/b:c", "..", "/abs/path"])
def test_a_run_name_never_leaves_runs_or_nests_folders(tmp_path, write_yaml, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = json.loads(json.dumps(TINY_RUN))
    run["name"] = name
    run["train"]["steps"] = 2
    config = write_yaml(yaml.safe_dump(run))
    with pytest.raises(SystemExit) as info:
        main(["run", str(config)])
    assert info.value.code == 0
    made = [p for p in (tmp_path / "runs").iterdir()]
    assert len(made) == 1 and (made[0] / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "runs"]
    assert not (tmp_path.parent / "escaped").exists()


# ----------------------------------------------------------------------------- 6. errors


def test_a_key_error_inside_a_builder_is_not_reported_as_a_missing_builder(monkeypatch):
    import reasonlab.tasks as tasks

    def broken(cfg):
        raise KeyError("inner")

    monkeypatch.setitem(tasks.BUILDERS, "twohop", broken)
    with pytest.raises(KeyError, match="inner"):
        build_task(tiny_task())


def test_study_variants_keep_their_yaml_types():
    from reasonlab.studies import STUDIES, StudySpec, study_configs

    base = STUDIES["cot-twohop"]
    spec = StudySpec(
        name="typed",
        description="",
        variants={"v": {"model.max_seq_len": None, "task.khop": [3], "model.d_mlp": 64}},
        presets=base.presets,
    )
    config = study_configs(spec, "cpu", 1)["v-s0"]
    assert config.model.max_seq_len is None
    assert config.task.khop == [3] and config.model.d_mlp == 64


def test_warmup_longer_than_training_is_noted(tmp_path, capsys):
    out = tmp_path / "run"
    summary = train(tiny_config("train.steps=4", "train.warmup_steps=10"), out)
    assert any("warmup_steps 10 exceeds train.steps 4" in note for note in summary["notes"])
    assert "warmup_steps 10 exceeds" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 9. summaries


def test_an_interrupted_summary_says_where_it_stopped(tmp_path, monkeypatch):
    interrupt_at_loss(monkeypatch, 6)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["step"] == 5 and summary["last_checkpoint"] == 4
    assert summary["resume"] == f"reasonlab run --resume {out}"


@pytest.mark.slow
def test_study_summary_and_rerun_messages(tmp_path, capsys):
    from reasonlab.studies import run_study

    out = tmp_path / "study"
    overrides = STUDY_TINY
    result = run_study("cot-twohop", out=out, overrides=overrides)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["overrides"] == overrides
    assert summary["wall_s"] > 0 and summary == json.loads(json.dumps(result))
    assert "no-cot-s0: training" in capsys.readouterr().out
    run_study("cot-twohop", out=out, overrides=overrides)
    assert capsys.readouterr().out.count("skipped (completed)") == 3
    code, _, err = run_cli(["run", "--resume", out], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "is a study folder (cot-twohop)" in line and "no-cot-s0" in line


# ----------------------------------------------------------------------------- 13. continuing


def test_a_finished_run_continues_to_more_steps_as_if_trained_that_long(
    finished_run, tmp_path, capsys
):
    import shutil

    continued = tmp_path / "continued"
    shutil.copytree(finished_run, continued)
    code, _, err = run_cli(["run", "--resume", continued, "--set", "train.steps=16"], capsys)
    assert code == 0, err
    straight = tmp_path / "straight"
    train(tiny_config("train.steps=16"), straight)
    read = RunDir(continued).read_metrics
    assert without_elapsed(read()) == without_elapsed(RunDir(straight).read_metrics())
    summary = json.loads((continued / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 16
    assert summary["continued_from"] == [12]
    assert 12 in RunDir(continued).checkpoint_steps()  # the old final checkpoint is kept
    assert RunDir(continued).load_config().train.steps == 16


def test_resume_changes_nothing_but_the_steps(finished_run, capsys):
    before = snapshot(finished_run)
    code, _, err = run_cli(["run", "--resume", finished_run, "--set", "train.lr=0.1"], capsys)
    assert code == 2 and "only train.steps" in one_line_error(err)
    code, _, err = run_cli(["run", "--resume", finished_run, "--set", "train.steps=6"], capsys)
    assert code == 2 and "train.steps: 6 is not beyond step 12" in one_line_error(err)
    assert snapshot(finished_run) == before


def test_checkpoints_leave_no_writer_temporaries_and_resume_clears_old_ones(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_checkpoint(3, {"model.w": torch.ones(2)}, {"config": {}})
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["step-3.safetensors"]
    # what a process killed inside a checkpoint write leaves: ours, and safetensors' own writer's
    for name in (".step-5.safetensors.tmp-123", ".tmpiBG6Tj"):
        (run.checkpoint_dir / name).write_bytes(b"partial")
    run.remove_temporary_files()
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["step-3.safetensors"]
    tensors, metadata = run.load_checkpoint(3)
    assert torch.equal(tensors["model.w"], torch.ones(2)) and metadata["step"] == 3
