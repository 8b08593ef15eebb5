"""The command line, in process (``reasonlab.cli.main``) and once as ``python -m reasonlab``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from helpers import one_line_error, run_cli, snapshot


def test_good_run(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["run", tiny_yaml, "--out", out, "--set", "train.steps=4"], capsys)
    assert code == 0, err
    assert "completed" in stdout and str(out) in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 4
    # resuming a completed run does nothing and says so
    before = snapshot(out)
    code, stdout, _ = run_cli(["run", "--resume", out], capsys)
    assert code == 0 and "already completed" in stdout
    assert snapshot(out) == before


def test_bad_config_exits_2_naming_the_field(write_yaml, tmp_path, capsys):
    path = write_yaml("task:\n  lam: -2\n")
    code, stdout, err = run_cli(["run", path, "--out", tmp_path / "run"], capsys)
    assert code == 2 and stdout == ""
    assert one_line_error(err).startswith("task.lam:")
    assert not (tmp_path / "run").exists()


def test_bad_override_exits_2_naming_the_field(tiny_yaml, tmp_path, capsys):
    code, _, err = run_cli(
        ["run", tiny_yaml, "--set", "model.n_layer=2", "--out", tmp_path / "run"], capsys
    )
    assert code == 2
    assert "model.n_layer" in one_line_error(err)


def test_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    code, _, err = run_cli(["run", missing, "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert str(missing) in one_line_error(err)


def test_run_into_a_folder_that_holds_another_run(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_cli(["run", tiny_yaml, "--out", out, "--set", "train.steps=2"], capsys)
    assert code == 0
    before = snapshot(out)
    code, _, err = run_cli(["run", tiny_yaml, "--out", out, "--set", "train.seed=5"], capsys)
    assert code == 2
    assert str(out) in one_line_error(err)
    assert snapshot(out) == before


def test_run_into_a_folder_with_other_files(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["run", tiny_yaml, "--out", out], capsys)
    assert code == 2
    assert str(out) in one_line_error(err)
    assert snapshot(out) == {"notes.txt": b"keep me"}


def test_resume_of_a_missing_folder(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    code, _, err = run_cli(["run", "--resume", missing], capsys)
    assert code == 2
    assert str(missing) in one_line_error(err)


def test_resume_with_a_config_is_refused(tiny_yaml, tmp_path, capsys):
    code, _, err = run_cli(["run", tiny_yaml, "--resume", tmp_path], capsys)
    assert code == 2
    assert "--resume" in one_line_error(err)


def test_run_without_config(capsys):
    code, _, err = run_cli(["run"], capsys)
    assert code == 2
    assert "CONFIG" in one_line_error(err)


@pytest.mark.parametrize("args", [["run", "x.yaml", "--bogus"], ["frobnicate"], ["data", "x.yaml"]])
def test_usage_errors_exit_2_with_one_line(args, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2
    line = one_line_error(err)
    if "--bogus" in args:
        assert "--bogus" in line


def test_data_writes_the_grokked_layout(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "data"
    code, stdout, err = run_cli(["data", tiny_yaml, "--out", out, "--set", "task.cot=none"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "test.json",
        "train.json",
        "valid.json",
        "vocab.json",
    ]
    train = json.loads((out / "train.json").read_text())
    assert f"train.json {len(train)}" in stdout
    # cot none: a two-hop item is h r1 r2 t </a>
    assert train[-1]["target_text"].count("<") == 5
    test_types = {item["type"] for item in json.loads((out / "test.json").read_text())}
    assert "test_inferred_ood" in test_types


def test_data_into_a_non_empty_folder(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.json").write_text("[]")
    code, _, err = run_cli(["data", tiny_yaml, "--out", out], capsys)
    assert code == 2
    assert str(out) in one_line_error(err)
    assert snapshot(out) == {"train.json": b"[]"}


def test_python_dash_m_bad_config_exits_2_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("task:\n  num_relations: 4\n  out_degree: 9\n")
    result = subprocess.run(
        [sys.executable, "-m", "reasonlab", "run", str(config), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: task") and "out_degree" in lines[0]
    assert not (tmp_path / "r").exists()


def test_bench_scan_prints_a_table_and_json(capsys):
    pytest.importorskip("mambapy")
    args = ["bench", "scan", "--lengths", "4,6", "--d-inner", "4", "--d-state", "2"]
    code, out, err = run_cli([*args, "--repeats", "1", "--no-memory"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert sorted({case["length"] for case in result["cases"]}) == [4, 6]
    assert "| L | method |" in err


@pytest.mark.parametrize("lengths", ["x", "0", ""])
def test_bench_scan_refuses_bad_lengths(lengths, capsys):
    code, _, err = run_cli(["bench", "scan", "--lengths", lengths], capsys)
    assert code == 2 and err.startswith("error: --lengths")


def test_bench_step_mamba_times_every_peer_on_the_same_shape(capsys):
    pytest.importorskip("mambapy")
    pytest.importorskip("transformers")
    args = ["bench", "step", "--model", "mamba", "--layers", "1", "--width", "16"]
    code, out, err = run_cli([*args, "--batch", "2", "--seq-len", "5", "--repeats", "1"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert set(result["median_ms"]) == {
        "reasonlab",
        "reasonlab_gpt",
        "mambapy",
        "transformers_mamba",
    }
    counts = result["parameters"]
    # the peers are the same model: the same number of parameters
    assert counts["reasonlab"] == counts["mambapy"] == counts["transformers_mamba"]


@pytest.mark.slow
def test_bench_step_gpt_compares_with_transformers_per_precision(capsys):
    """Both models in each precision asked for, with FLOPs, matmul rates and utilization."""
    pytest.importorskip("transformers")
    args = ["bench", "step", "--layers", "1", "--width", "16", "--batch", "4", "--seq-len", "5"]
    code, out, err = run_cli([*args, "--repeats", "1", "--precision", "both"], capsys)
    assert code == 0, err
    result = json.loads(out)
    methods = {f"{m}_{p}" for m in ("reasonlab", "transformers_gpt2") for p in ("fp32", "bf16")}
    assert set(result["median_ms"]) == set(result["utilization"]) == methods
    assert set(result["matmul_gflops"]) == {"fp32", "bf16"}
    assert set(result["speedup_vs_transformers"]) == {"fp32", "bf16"}
    assert result["step_gflop"] > 0 and "| reasonlab_bf16 |" in err


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["step", "--model", "rwkv"], "--model"),
        (["--model", "rwkv"], "--model"),  # no benchmark named: step
        (["scan", "--model", "gpt"], "No such option: --model"),  # only step has --model
        (["eval"], "--run"),
        (["nope"], "NAME"),
        (["step", "--shape", "huge"], "--shape"),
        (["step", "--precision", "fp8"], "--precision"),
        (["step", "--device", "tpu"], "--device"),
        pytest.param(
            ["step", "--model", "mamba", "--device", "cuda:0"],
            "--device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),
    ],
)
def test_bench_refuses_bad_choices(args, field, capsys):
    code, _, err = run_cli(["bench", *args], capsys)
    assert code == 2 and err.startswith(f"error: {field}") and err.count("\n") == 1
