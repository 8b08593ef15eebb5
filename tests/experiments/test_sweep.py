"""Sweeps: expansion into named trials, bad specs refused before any trial, a failing trial
recorded while the rest go on, a killed sweep resumed without losing a finished trial, and the
Ray executor giving the local executor's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import reasonlab.experiments.trials as trials_module
from helpers import TINY_RUN, interrupt_at_loss, read_metrics, run_cli, snapshot, without_elapsed
from reasonlab.config import ConfigError
from reasonlab.experiments.sweep import expand, load_sweep, run_sweep

BASE = {**TINY_RUN, "log": {"progress": False}}


def write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = folder / name
    path.write_text(yaml.safe_dump({"base": "base.yaml", **spec}))
    return path


def test_grid_zip_and_seeds_expand_in_order_with_readable_names(tmp_path):
    spec = {
        "grid": {"model.d_model": [8, 16], "train.lr": [0.001]},
        "zip": {"task.lam": [3.0, 4.0], "train.steps": [4, 6]},
        "seeds": [0, 2],
    }
    _, trials = load_sweep(write_spec(tmp_path, spec))
    assert len(trials) == 2 * 1 * 2 * 2
    assert trials[0].name == "d_model=8-lr=0.001-lam=3.0-steps=4-s0"
    assert trials[1].name == "d_model=8-lr=0.001-lam=3.0-steps=4-s2"
    assert trials[-1].name == "d_model=16-lr=0.001-lam=4.0-steps=6-s2"
    last = trials[-1].config
    assert last.model.d_model == 16 and last.task.lam == 4.0 and last.train.steps == 6
    assert last.train.seed == BASE["train"].get("seed", 0) + 2 and last.task.seed == 2
    assert last.name == "spec/" + trials[-1].name


def test_a_ready_study_expands_its_variants():
    spec = {"study": "cot-twohop", "variants": ["no-cot", "cot-interleaved"], "seeds": 2}
    trials = expand({**spec, "set": {"train.steps": 10}})
    assert [t.name for t in trials] == [
        "no-cot-s0",
        "no-cot-s1",
        "cot-interleaved-s0",
        "cot-interleaved-s1",
    ]
    assert trials[2].config.task.cot == "interleaved" and trials[2].config.train.steps == 10


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"grid": {"model.frobnicate": [1, 2]}}, "model.frobnicate"),
        ({"grid": {}}, "grid"),
        ({"grid": {"train.lr": []}}, "grid.train.lr"),
        ({"zip": {"train.lr": [0.1, 0.2], "train.steps": [3]}}, "zip"),
        ({"seeds": 0}, "seeds"),
        ({"grdi": {"train.lr": [0.1]}}, "grdi"),
    ],
)
def test_a_bad_spec_exits_2_with_one_line_before_any_trial(tmp_path, capsys, spec, field):
    path = write_spec(tmp_path, spec)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["sweep", str(path), "--out", str(out)], capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {field}")
    assert not out.exists()


def test_ray_missing_or_not_answering_exits_2_before_any_trial(tmp_path, capsys, monkeypatch):
    import builtins

    path = write_spec(tmp_path, {"grid": {"train.lr": [0.001]}})
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, _, err = run_cli(
        ["sweep", str(path), "--out", str(tmp_path / "a"), "--executor", "ray"], capsys
    )
    assert code == 2 and err.startswith("error: --executor: ray is not installed")
    monkeypatch.setattr(builtins, "__import__", real_import)
    pytest.importorskip("ray")
    args = ["--executor", "ray", "--address", "127.0.0.1:9"]
    code, _, err = run_cli(["sweep", str(path), "--out", str(tmp_path / "b"), *args], capsys)
    assert code == 2 and err.startswith("error: --address") and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_rest_go_on(tmp_path, capsys, monkeypatch):
    """A trial with an invalid config (3 heads on width 16) and one whose training raises are
    recorded as failed with their messages; the others complete; exit code 1."""
    path = write_spec(tmp_path, {"grid": {"model.n_heads": [2, 3, 4]}, "seeds": 2})
    real = trials_module.train_or_reuse

    def broken(config, run_dir):
        if run_dir.name == "n_heads=4-s1":
            raise RuntimeError("disk on fire\nsecond line")
        return real(config, run_dir)

    monkeypatch.setattr(trials_module, "train_or_reuse", broken)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["sweep", str(path), "--out", str(out)], capsys)
    assert code == 1 and "3 of 6 trials completed" in stdout
    trials = json.loads((out / "summary.json").read_text())["trials"]
    assert [n for n, t in trials.items() if t["status"] == "completed"] == [
        "n_heads=2-s0",
        "n_heads=2-s1",
        "n_heads=4-s0",
    ]
    assert "not divisible by 3" in trials["n_heads=3-s0"]["error"]
    assert trials["n_heads=4-s1"]["error"] == "RuntimeError: disk on fire"
    assert "n_heads=3-s1: failed" in err


@pytest.mark.slow
def test_a_killed_sweep_loses_no_finished_trial_and_the_rerun_completes(tmp_path, monkeypatch):
    path = write_spec(tmp_path, {"grid": {"model.d_model": [8, 16]}, "seeds": 2})
    reference = tmp_path / "reference"
    run_sweep(path, reference)
    out = tmp_path / "out"
    steps = BASE["train"]["steps"]
    interrupt_at_loss(monkeypatch, call=steps + 5)  # in the second trial, after a checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and list(summary["trials"]) == ["d_model=8-s0"]
    first = snapshot(out / "runs" / "d_model=8-s0")
    monkeypatch.undo()
    result = run_sweep(path, out)
    assert result["status"] == "completed"
    assert snapshot(out / "runs" / "d_model=8-s0") == first  # skipped, untouched
    for name in result["trials"]:
        assert without_elapsed(read_metrics(out / "runs" / name)) == without_elapsed(
            read_metrics(reference / "runs" / name)
        )


@pytest.mark.slow
def test_the_ray_executor_gives_the_local_executors_metrics(tmp_path):
    """On a local Ray (one CPU per trial, so one torch thread, as the local run here)."""
    pytest.importorskip("ray")
    path = write_spec(tmp_path, {"grid": {"model.d_model": [8, 16]}, "seeds": 1})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_sweep(path, tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    ray_result = run_sweep(path, tmp_path / "ray", executor="ray", cpus_per_trial=1)
    assert list(ray_result["trials"]) == list(local["trials"])
    for name, trial in ray_result["trials"].items():
        assert trial["status"] == "completed"
        assert without_elapsed(read_metrics(tmp_path / "ray" / "runs" / name)) == without_elapsed(
            read_metrics(tmp_path / "local" / "runs" / name)
        )


def test_a_spec_whose_trials_changed_is_refused_on_rerun(tmp_path):
    path = write_spec(tmp_path, {"grid": {"model.d_model": [8]}})
    run_sweep(path, tmp_path / "out")
    write_spec(tmp_path, {"grid": {"model.d_model": [8]}, "set": {"train.lr": 0.5}})
    with pytest.raises(ConfigError, match="different config"):
        run_sweep(path, tmp_path / "out")
