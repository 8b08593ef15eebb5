"""`reasonlab runs`: every run under a folder with its config values and summary metrics, read
from the run folders by DuckDB; filters, columns, formats, the DataFrame, damaged folders."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from helpers import run_cli, tiny_config
from reasonlab.runs.summary import RunSummary
from reasonlab.runs.table import SUMMARY_COLUMNS, SUMMARY_SECTIONS, query_runs, runs_frame
from reasonlab.training.loop import train

pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """Three tiny runs in a study-like layout (two seeds of one width, one of another) and one
    nested deeper."""
    root = tmp_path_factory.mktemp("many")
    train(tiny_config("train.seed=0"), root / "runs" / "w16-s0")
    train(tiny_config("train.seed=1"), root / "runs" / "w16-s1")
    train(tiny_config("model.d_model=8", "train.steps=6"), root / "other" / "deep" / "w8-s0")
    return root


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_every_run_with_its_config_values_and_metrics(runs_root):
    rows = query_runs(runs_root)
    assert [r["run"] for r in rows] == ["other/deep/w8-s0", "runs/w16-s0", "runs/w16-s1"]
    for row in rows:
        run = Path(row["path"])
        config = json.loads((run / "config.json").read_text())
        summary = summary_of(run)
        assert row["model.d_model"] == config["model"]["d_model"]
        assert row["train.seed"] == config["train"]["seed"]
        assert row["task.num_entities"] == config["task"]["num_entities"]
        assert row["status"] == summary["status"] == "completed"
        assert row["step"] == summary["step"]
        for key, value in summary["final"].items():
            assert row[f"final.{key}"] == pytest.approx(value)


def test_where_filters_on_config_and_metrics(runs_root):
    rows = query_runs(runs_root, "model.d_model = 16 AND train.seed = 1")
    assert [r["run"] for r in rows] == ["runs/w16-s1"]
    loss_free = query_runs(runs_root, "final.test_inferred_iid >= 0")
    assert len(loss_free) == 3
    assert query_runs(runs_root, "model.d_model = 99") == []


def test_cli_table_csv_and_json(runs_root, capsys):
    code, out, err = run_cli(["runs", str(runs_root)], capsys)
    assert code == 0, err
    header = out.splitlines()[0].split()
    # default columns: the config keys that differ between the runs, and the final metrics
    assert header[:3] == ["run", "status", "step"]
    assert (
        "model.d_model" in header and "train.seed" in header and "task.num_entities" not in header
    )
    assert any(name.startswith("final.") for name in header)
    code, out, _ = run_cli(
        ["runs", str(runs_root), "--format", "csv", "--columns", "run,model.*"], capsys
    )
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["run"] for r in table] == ["other/deep/w8-s0", "runs/w16-s0", "runs/w16-s1"]
    assert [r["model.d_model"] for r in table] == ["8", "16", "16"]
    code, out, _ = run_cli(
        ["runs", str(runs_root), "--format", "json", "--where", "step = 6"], capsys
    )
    assert [r["run"] for r in json.loads(out)] == ["other/deep/w8-s0"]


def test_parquet_and_dataframe_hold_the_same_rows(runs_root, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    target = tmp_path / "runs.parquet"
    code, _, err = run_cli(
        ["runs", str(runs_root), "--format", "parquet", "--output", str(target)], capsys
    )
    assert code == 0, err
    written = pd.read_parquet(target)
    frame = runs_frame(runs_root)
    assert list(written["run"]) == list(frame["run"]) == [r["run"] for r in query_runs(runs_root)]
    assert "final.test_inferred_iid" in frame.columns and "model.d_model" in frame.columns


def test_a_damaged_folder_is_named_and_the_rest_listed(runs_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(runs_root, root)
    (root / "runs" / "w16-s0" / "summary.json").write_text("{torn")
    (root / "runs" / "w16-s1" / "config.json").write_text("[1, 2]")
    code, out, err = run_cli(["runs", str(root), "--format", "json"], capsys)
    assert code == 0
    rows = {r["run"]: r for r in json.loads(out)}
    assert set(rows) == {"other/deep/w8-s0", "runs/w16-s0"}
    assert rows["runs/w16-s0"]["status"] is None
    assert "w16-s0/summary.json" in err and "w16-s1/config.json" in err


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--where", "model.n_layers ="], "--where"),
        (["--where", "no_such_column = 1"], "--where"),
        (["--format", "xml"], "--format"),
        (["--format", "parquet"], "--output"),
        (["--columns", "nothing.*"], "--columns"),
    ],
)
def test_bad_options_exit_2_with_one_line(runs_root, capsys, args, field):
    code, out, err = run_cli(["runs", str(runs_root), *args], capsys)
    assert out == ""
    assert code == 2 and err.startswith(f"error: {field}") and err.count("\n") == 1, err


def test_a_missing_folder_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["runs", str(tmp_path / "nope")], capsys)
    assert code == 2 and err.startswith("error: DIR")


def test_the_summary_columns_are_run_summary_fields():
    """The table reads summary.json with DuckDB; the keys it selects are RunSummary's."""
    assert set(SUMMARY_COLUMNS + SUMMARY_SECTIONS) <= set(RunSummary.model_fields)
