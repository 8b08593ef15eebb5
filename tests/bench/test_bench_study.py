"""``reasonlab bench study``: a study trained packed and unpacked into temporary folders, timed,
as a markdown table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import STUDY_TINY, run_cli
from reasonlab.bench.study import format_study_table, time_study


def test_time_study_measures_each_case_in_a_fresh_folder():
    folders: list[Path] = []

    def train(folder: Path, pack: str) -> int:
        assert not folder.exists()
        folders.append(folder)
        folder.mkdir()
        return 3

    result = time_study(train, {"unpacked": "off", "packed": "3"}, "cpu", warmup=train)
    assert len(folders) == 4 and len(set(folders)) == 4
    assert not any(f.exists() for f in folders)  # temporary folders, removed
    for case in result["cases"].values():
        assert case["runs"] == 3 and case["wall_s"] >= 0 and case["runs_per_hour"] > 0
        assert case["utilization"] >= 0
    assert "speedup" in result
    table = format_study_table(result)
    assert table.splitlines()[0].startswith("| case | --pack |") and "CPU utilization" in table


@pytest.mark.slow
def test_bench_study_command(capsys):
    overrides = [part for item in STUDY_TINY for part in ("--set", item)]
    args = ["bench", "study", "cot-twohop", "--seeds", "2", "--pack", "2", *overrides]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["study"] == "cot-twohop" and set(result["cases"]) == {"unpacked", "packed"}
    runs = {case["runs"] for case in result["cases"].values()}
    assert len(runs) == 1 and runs.pop() > 1
    assert "| unpacked | off |" in err and "| packed | 2 |" in err


def test_bench_study_refuses_bad_input(capsys):
    code, _, err = run_cli(["bench", "study", "nope"], capsys)
    assert code == 2 and "NAME" in err
    code, _, err = run_cli(["bench", "study", "cot-twohop", "--pack", "0"], capsys)
    assert code == 2 and "--pack" in err
