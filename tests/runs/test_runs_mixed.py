"""`reasonlab runs` over runs of several task kinds: one table per kind with only the columns
that tell its rows apart, failed trials of a sweep or a study listed from its summary.json, and
metric names holding a dot written as they are in --where. The run folders are written by hand
(config.json and summary.json are all the table reads), so nothing trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli
from reasonlab.runs.table import ERROR_WIDTH, query_runs, quote_dotted_metrics

pytest.importorskip("duckdb")

LONG_ERROR = "ConfigError: task.dim: " + "a very long explanation " * 10


def write_run(folder: Path, config: dict, final: dict, status: str = "completed") -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    summary = {"status": status, "step": 10, "final": final}
    (folder / "summary.json").write_text(json.dumps(summary))


def twohop(seed: int, layers: int) -> dict:
    return {
        "task": {"kind": "twohop", "num_entities": 30, "lam": 1.5, "cot": "interleaved"},
        "model": {"kind": "gpt", "n_layers": layers, "d_model": 16},
        "train": {"steps": 10, "seed": seed},
    }


def icl(seed: int) -> dict:
    return {
        "task": {"kind": "icl", "dim": 4, "n_points": 11},
        "model": {"kind": "gpt", "n_layers": 2, "d_model": 16},
        "train": {"steps": 10, "seed": seed},
    }


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two two-hop runs that differ in depth, two ICL runs that differ in seed, and a sweep whose
    third trial failed before its run folder was made."""
    root = tmp_path / "mixed"
    same = {"id_atomic": 1.0}
    write_run(root / "twohop" / "l1", twohop(0, 1), {**same, "test_inferred_ood": 0.25})
    write_run(root / "twohop" / "l2", twohop(0, 2), {**same, "test_inferred_ood": 0.5})
    sweep = root / "sweep"
    write_run(sweep / "runs" / "s0", icl(0), {"test": 0.5, "test.k10": 1.5})
    write_run(sweep / "runs" / "s1", icl(1), {"test": 0.25, "test.k10": 2.5})
    trials = {
        "s0": {"status": "completed"},
        "s1": {"status": "completed"},
        "bad": {"status": "failed", "error": LONG_ERROR},
    }
    (sweep / "summary.json").write_text(json.dumps({"sweep": "icl", "trials": trials}))
    return root


def test_a_failed_trial_without_a_run_folder_is_listed(mixed):
    rows = {row["run"]: row for row in query_runs(mixed)}
    assert set(rows) == {
        "twohop/l1",
        "twohop/l2",
        "sweep/runs/s0",
        "sweep/runs/s1",
        "sweep/runs/bad",
    }
    failed = rows["sweep/runs/bad"]
    assert failed["status"] == "failed" and failed["error"] == LONG_ERROR
    assert [r["run"] for r in query_runs(mixed, "status = 'failed'")] == ["sweep/runs/bad"]


def test_a_study_failed_run_is_listed_too(tmp_path):
    study = tmp_path / "study"
    write_run(study / "runs" / "a-s0", twohop(0, 1), {"id_atomic": 1.0})
    runs = {"a-s0": {"status": "completed"}, "b-s0": {"status": "failed", "error": "boom"}}
    (study / "summary.json").write_text(json.dumps({"study": "x", "preset": "cpu", "runs": runs}))
    rows = query_runs(study)
    assert [(r["run"], r["status"]) for r in rows] == [
        ("runs/a-s0", "completed"),
        ("runs/b-s0", "failed"),
    ]


def test_one_table_per_task_kind_with_only_the_columns_that_vary(mixed, capsys):
    code, out, err = run_cli(["runs", str(mixed)], capsys)
    assert code == 0, err
    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in out.split("\n\n")}
    assert set(blocks) == {
        "task.kind twohop: 2 runs",
        "task.kind icl: 2 runs",
        "failed before training: 1 run",
    }
    twohop_header = blocks["task.kind twohop: 2 runs"][0].split()
    assert twohop_header == ["run", "status", "step", "model.n_layers", "final.test_inferred_ood"]
    icl_header = blocks["task.kind icl: 2 runs"][0].split()
    assert icl_header == ["run", "status", "step", "train.seed", "final.test", "final.test.k10"]
    failed = blocks["failed before training: 1 run"]
    assert failed[0].split() == ["run", "status", "step", "error"]
    assert LONG_ERROR[: ERROR_WIDTH - 3] + "..." in failed[2]
    assert max(len(line) for line in out.splitlines()) < 120


def test_json_holds_the_columns_of_every_kind_in_one_list(mixed, capsys):
    code, out, _ = run_cli(["runs", str(mixed), "--format", "json"], capsys)
    assert code == 0
    rows = {row["run"]: row for row in json.loads(out)}
    assert rows["sweep/runs/bad"]["error"] == LONG_ERROR  # not cut outside a text table
    assert set(rows["twohop/l1"]) >= {"model.n_layers", "final.test.k10", "train.seed"}


def test_a_dotted_metric_name_works_as_written(mixed, capsys):
    rows = query_runs(mixed, "final.test.k10 < 2")
    assert [r["run"] for r in rows] == ["sweep/runs/s0"]
    assert query_runs(mixed, 'final."test.k10" < 2') == rows
    code, out, err = run_cli(["runs", str(mixed), "--where", "final.test.k10 > 2"], capsys)
    assert code == 0, err
    assert "sweep/runs/s1" in out and "sweep/runs/s0" not in out


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("final.test.k10 < 2", 'final."test.k10" < 2'),
        ("best.a.b.c >= 1 AND final.x = 0", 'best."a.b.c" >= 1 AND final.x = 0'),
        (
            "final.\"test.k10\" < 2 OR run = 'final.a.b'",
            "final.\"test.k10\" < 2 OR run = 'final.a.b'",
        ),
        ("model.n_layers = 4", "model.n_layers = 4"),
    ],
)
def test_dotted_metrics_are_quoted_outside_literals(where, expected):
    assert quote_dotted_metrics(where) == expected


def test_an_unknown_dotted_metric_shows_the_quoted_form(mixed, capsys):
    code, _, err = run_cli(["runs", str(mixed), "--where", "model.no_such.key = 1"], capsys)
    assert code == 2 and err.count("\n") == 1 and 'final."test.k10"' in err
