"""A sweep is counted before it is expanded: more trials than the limit (10,000, or
``--max-trials N``) is refused before a single trial is built; names have a length limit; and a
bad spec's message quotes at most a couple of hundred characters of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import reasonlab.experiments.sweep as sweep_module
from helpers import TINY_RUN, one_line_error, run_cli
from reasonlab.config import ConfigError
from reasonlab.experiments.sweep import expand


def write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(TINY_RUN))
    path = folder / name
    path.write_text(yaml.safe_dump({"base": "base.yaml", **spec}))
    return path


def refuse_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def built(*args, **kwargs):
        raise AssertionError("a trial was built")

    monkeypatch.setattr(sweep_module, "_trial", built)


def test_a_million_trials_are_refused_before_any_is_built(tmp_path, capsys, monkeypatch):
    values = list(range(1, 101))
    grid = {"train.lr": [v / 1000 for v in values], "train.warmup_steps": values,
            "task.seed": values}  # fmt: skip
    path = write_spec(tmp_path, {"grid": grid})
    refuse_building(monkeypatch)
    out = tmp_path / "out"
    code, _, err = run_cli(["sweep", path, "--out", out], capsys)
    message = one_line_error(err)
    assert code == 2 and message.startswith("grid: 1,000,000 trials")
    assert "10,000" in message and "--max-trials" in message
    assert not out.exists()


def test_max_trials_moves_the_limit(tmp_path, capsys, monkeypatch):
    path = write_spec(tmp_path, {"grid": {"train.lr": [0.001, 0.002, 0.003]}, "seeds": 2})
    spec = yaml.safe_load(path.read_text())
    assert len(expand(spec, tmp_path, max_trials=6)) == 6
    with pytest.raises(ConfigError, match=r"^grid: 6 trials \(3 train.lr x 2 seeds\)"):
        expand(spec, tmp_path, max_trials=5)
    refuse_building(monkeypatch)
    code, _, err = run_cli(["sweep", path, "--out", tmp_path / "o", "--max-trials", 5], capsys)
    assert code == 2 and "more than the 5 a sweep runs" in one_line_error(err)


def test_a_seed_count_is_counted_not_listed(tmp_path, monkeypatch):
    refuse_building(monkeypatch)
    spec = yaml.safe_load(write_spec(tmp_path, {"seeds": 10**15}).read_text())
    with pytest.raises(ConfigError, match=r"^seeds: 1,000,000,000,000,000 trials"):
        expand(spec, tmp_path)


def test_sweep_and_trial_names_have_a_length_limit(tmp_path, monkeypatch):
    spec = yaml.safe_load(write_spec(tmp_path, {"name": "n" * 300}).read_text())
    with pytest.raises(ConfigError, match=r"^name: .*200 characters"):
        expand(spec, tmp_path)
    refuse_building(monkeypatch)
    long_values = {"grid": {"train.device": ["cpu" + "x" * 200, "cpu" + "y" * 200]}}
    spec = yaml.safe_load(write_spec(tmp_path, long_values).read_text())
    with pytest.raises(ConfigError, match=r"^grid: the trial name .*200 characters") as info:
        expand(spec, tmp_path)
    assert len(str(info.value)) < 400


def test_a_bad_spec_is_quoted_in_a_short_line(tmp_path, capsys):
    path = write_spec(tmp_path, {"seeds": ["s"] * 5_000})
    code, _, err = run_cli(["sweep", path, "--out", tmp_path / "out"], capsys)
    message = one_line_error(err)
    assert code == 2 and message.startswith("seeds: ") and "(5,000 items)" in message
    assert len(message) < 400
    # Nine levels of nine aliases: 9^9 seeds once expanded (the old message echoed 351 MB).
    levels = [f"&l0 [{', '.join(['0'] * 9)}]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    path.write_text(f"base: base.yaml\nseeds: [{', '.join(levels)}]\n")
    code, _, err = run_cli(["sweep", path, "--out", tmp_path / "out"], capsys)
    message = one_line_error(err)
    assert code == 2 and "aliases" in message and len(message) < 300
