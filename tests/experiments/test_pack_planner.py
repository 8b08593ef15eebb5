"""The pack planner (``--pack auto|off|K``): which runs train together, what is refused or split,
and packed studies and sweeps writing ordinary run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import STUDY_TINY, TINY_RUN, read_metrics, run_cli, tiny_config
from reasonlab.config import ConfigError
from reasonlab.experiments.study import run_study
from reasonlab.experiments.trials import pack_size, parse_pack, plan_packs, train_packed


def test_parse_pack_values():
    assert parse_pack("auto") is None and parse_pack("off") == 1 and parse_pack("8") == 8
    for bad in ("0", "-2", "many", "1.5", ""):
        with pytest.raises(ConfigError, match=r"^--pack: "):
            parse_pack(bad)


def test_auto_is_off_on_a_cpu():
    configs = [tiny_config(f"train.seed={s}") for s in range(3)]
    assert pack_size("auto", configs) == 1
    assert pack_size("4", configs) == 4


def test_plan_groups_compatible_runs_in_packs_of_at_most_k():
    configs = {
        f"s{s}": tiny_config(f"train.seed={s}", f"train.lr={0.001 * (s + 1)}") for s in range(5)
    }
    configs["wide"] = tiny_config("model.d_model=32")
    configs["long"] = tiny_config("train.steps=30")
    configs["s5"] = tiny_config("train.seed=5", "task.lam=2.0", "train.warmup_steps=5")
    assert plan_packs(configs, 4) == [["s0", "s1", "s2", "s3"], ["s4", "s5"], ["wide"], ["long"]]
    assert plan_packs(configs, 1) == [[name] for name in configs]


@pytest.mark.slow
def test_runs_of_another_input_shape_are_split_off(tmp_path):
    configs = [tiny_config(), tiny_config("train.seed=1"), tiny_config("task.num_entities=40")]
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    results = train_packed(configs, dirs)
    assert [r["status"] for r in results] == ["completed"] * 3
    assert any("pack of 2" in note for note in results[0]["notes"])
    assert not any("pack of" in note for note in results[2]["notes"])


def test_a_packed_study_writes_ordinary_runs(tmp_path, capsys):
    result = run_study("cot-twohop", seeds=2, out=tmp_path / "s", overrides=STUDY_TINY, pack="4")
    assert result.status == "completed"
    names = list(result.runs)
    assert all(run.status == "completed" for run in result.runs.values())
    assert "(pack of 4)" in capsys.readouterr().out
    again = run_study("cot-twohop", seeds=2, out=tmp_path / "s", overrides=STUDY_TINY, pack="4")
    assert list(again.runs) == names  # completed members are skipped, the order kept
    for name in names:
        run_dir = tmp_path / "s" / "runs" / name
        assert read_metrics(run_dir)[-1]["step"] == 6
        assert (run_dir / "checkpoints" / "step-6.safetensors").exists()


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_bad_pack_values_exit_2(tmp_path, capsys, value):
    code, _, err = run_cli(
        ["study", "cot-twohop", "--out", tmp_path / "s", "--pack", value], capsys
    )
    assert code == 2 and err.startswith("error: --pack: "), err
    assert not (tmp_path / "s").exists()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": "base.yaml", "seeds": 2}))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY_RUN))
    code, _, err = run_cli(["sweep", spec, "--out", tmp_path / "w", "--pack", value], capsys)
    assert code == 2 and err.startswith("error: --pack: "), err


def test_a_packed_sweep(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY_RUN))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump({"base": "base.yaml", "grid": {"train.lr": [0.001, 0.003]}, "seeds": 2})
    )
    code, out, err = run_cli(["sweep", spec, "--out", tmp_path / "w", "--pack", "3"], capsys)
    assert code == 0, err
    assert out.count("(pack of 3)") == 3 and "4 of 4 trials completed" in out
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert list(summary["trials"]) == ["lr=0.001-s0", "lr=0.001-s1", "lr=0.003-s0", "lr=0.003-s1"]
    assert all(t["status"] == "completed" for t in summary["trials"].values())
    code, _, err = run_cli(
        ["sweep", spec, "--out", tmp_path / "r", "--executor", "ray", "--pack", "2"], capsys
    )
    assert code == 2 and "--pack" in err


def test_a_pack_member_without_partner_trains_alone(tmp_path: Path):
    [result] = train_packed([tiny_config()], [tmp_path / "one"])
    assert result["status"] == "completed"
    assert not any("pack of" in note for note in result["notes"])
