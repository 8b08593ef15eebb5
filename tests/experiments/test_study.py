"""The ready CoT two-hop study: presets, the study folder, the report, the paper preset on CPU."""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import sys

import pytest

from helpers import STUDY_TINY
from reasonlab.config import ConfigError
from reasonlab.experiments.study_spec import load_studies
from reasonlab.runs.summary import StudyResult
from reasonlab.studies import STUDIES, run_study, study_configs


def test_cot_twohop_presets_match_the_paper():
    spec = STUDIES["cot-twohop"]
    configs = study_configs(spec, "paper", seeds=1)
    assert set(configs) == {"no-cot-s0", "cot-after-relations-s0", "cot-interleaved-s0"}
    assert {c.task.cot for c in configs.values()} == {"none", "after_relations", "interleaved"}
    paper = configs["cot-after-relations-s0"]
    assert (paper.task.num_entities, paper.task.num_relations, paper.task.out_degree) == (
        2000,
        200,
        20,
    )
    assert paper.task.lam == 7.2 and paper.task.ood_fraction == 0.05
    assert (paper.model.n_layers, paper.model.d_model, paper.model.n_heads) == (8, 768, 12)
    train = paper.train
    assert (train.lr, train.weight_decay, train.warmup_steps, train.batch_size, train.steps) == (
        1e-4,
        0.1,
        2000,
        512,
        8000,
    )
    assert train.betas == (0.9, 0.999) and train.schedule == "constant" and train.grad_clip == 1.0


def test_roles_name_variants_of_their_study(tmp_path):
    for spec in STUDIES.values():
        assert set(spec.roles.values()) <= set(spec.variants), spec.name
    assert STUDIES["mamba-copy"].roles["transformer_short"] == "gpt-L20"
    (tmp_path / "s.yaml").write_text(
        "name: s\nvariants: {a: {}}\npresets: {cpu: {}}\nroles: {baseline: b}\n"
    )
    with pytest.raises(ConfigError, match=r"study s: roles\.baseline: no variant 'b'"):
        load_studies(tmp_path)


def test_a_preset_may_run_a_subset_of_the_variants(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "name: s\nvariants: {a: {}, b: {}, c: {}}\npresets: {cpu: {}, paper: {}}\n"
        "preset_variants: {cpu: [c, a]}\n"
    )
    spec = load_studies(tmp_path)["s"]
    assert list(spec.variants_for("cpu")) == ["c", "a"]  # in the order the preset lists them
    assert list(spec.variants_for("paper")) == ["a", "b", "c"]
    (tmp_path / "s.yaml").write_text(
        "name: s\nvariants: {a: {}}\npresets: {cpu: {}}\npreset_variants: {cpu: [a, z]}\n"
    )
    with pytest.raises(ConfigError, match=r"study s: preset_variants\.cpu: no variant 'z'"):
        load_studies(tmp_path)


def test_a_preset_may_give_a_variant_settings_of_its_own(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "name: s\nvariants: {a: {train.lr: 0.1}, b: {}}\n"
        "presets: {cpu: {train: {steps: 10}}, paper: {train: {steps: 99}}}\n"
        "preset_variants: {cpu: {b: {train.steps: 40}, a: {}}}\n"
    )
    spec = load_studies(tmp_path)["s"]
    assert spec.variants_for("cpu") == {"b": {"train.steps": 40}, "a": {"train.lr": 0.1}}
    assert spec.variants_for("paper") == {"a": {"train.lr": 0.1}, "b": {}}  # cpu's stay there
    configs = study_configs(spec, "cpu", seeds=1)
    assert configs["b-s0"].train.steps == 40 and configs["a-s0"].train.steps == 10
    (tmp_path / "s.yaml").write_text(
        "name: s\nvariants: {a: {}}\npresets: {cpu: {}}\npreset_variants: {cpu: a}\n"
    )
    with pytest.raises(ConfigError, match=r"preset_variants\.cpu: give a list"):
        load_studies(tmp_path)


def test_seeds_vary_data_and_training():
    configs = study_configs(STUDIES["cot-twohop"], "cpu", seeds=2)
    assert len(configs) == 6
    a, b = configs["no-cot-s0"], configs["no-cot-s1"]
    assert a.task.seed != b.task.seed and a.train.seed != b.train.seed


def test_unknown_preset_and_study_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="--preset"):
        study_configs(STUDIES["cot-twohop"], "huge", seeds=1)
    with pytest.raises(ConfigError, match="unknown study"):
        run_study("no-such-study", out=tmp_path / "s")


def html_tables(report: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, body rows of cells) of every table in a report."""
    tables = []
    for body in re.findall(r"<table>(.*?)</table>", report, re.S):
        header = re.findall(r"<th>(.*?)</th>", body)
        rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
        tables.append((header, [row for row in rows if row]))
    return tables


def check_report_tables(report: str, runs: dict, headline: dict[str, str]) -> int:
    """Asserts that every cell of a per-run table that names a probe (or 'final LABEL' of a
    headline probe) shows that run's final value with 3 decimals; returns how many were checked."""
    checked = 0
    for header, rows in html_tables(report):
        if not header or header[0] != "run":
            continue
        for row in rows:
            final = runs[html.unescape(row[0])]["final"]
            for column, cell in zip(header[1:], row[1:], strict=True):
                key = headline.get(column.removeprefix("final "), column)
                if key in final:
                    assert cell == f"{final[key]:.3f}", (row[0], column, cell)
                    checked += 1
    return checked


@pytest.mark.slow
def test_study_writes_summary_and_report_and_reuses_runs(tmp_path):
    out = tmp_path / "study"
    result = run_study("cot-twohop", preset="cpu", seeds=1, out=out, overrides=STUDY_TINY)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == result
    StudyResult.read(out / "summary.json").write(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == (out / "summary.json").read_bytes()
    assert summary["study"] == "cot-twohop" and summary["preset"] == "cpu"
    assert (
        set(summary["runs"])
        == set(result["runs"])
        == {"no-cot-s0", "cot-after-relations-s0", "cot-interleaved-s0"}
    )
    for name, run in summary["runs"].items():
        assert run["status"] == "completed"
        assert run["config"]["model"]["d_model"] == 16
        assert "test_inferred_ood" in run["final"] and "test_inferred_iid" in run["best"]
        assert (out / "runs" / name / "metrics.jsonl").exists()
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 2  # curves + per-stage curves
    assert "The paper&#x27;s numbers" in report or "The paper's numbers" in report
    paper_settings = [row["setting"] for row in STUDIES["cot-twohop"].paper["rows"]]
    assert all(html.escape(setting) in report for setting in paper_settings)
    # the tables show what the runs computed: each run's final accuracies from summary.json
    checked = check_report_tables(report, summary["runs"], STUDIES["cot-twohop"].headline)
    assert checked >= 3 * (2 + 5)  # headline ID/OOD and the five probes, for each run
    assert "r2 is fed after the model" in report  # the interleaved evaluation is stated
    assert (out / "curves.png").stat().st_size > 1000

    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.jsonl")}
    run_study("cot-twohop", preset="cpu", seeds=1, out=out, overrides=STUDY_TINY)
    after = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.jsonl")}
    assert before == after  # completed runs are reused, not retrained

    with pytest.raises(ConfigError, match="different config"):
        run_study(
            "cot-twohop", preset="cpu", seeds=1, out=out, overrides=[*STUDY_TINY, "train.lr=0.01"]
        )
    with pytest.raises(ConfigError, match="another study"):
        run_study("cot-twohop", preset="paper", seeds=1, out=out, overrides=STUDY_TINY)


def study_command(out, overrides: list[str], *options: str) -> list[str]:
    """`reasonlab study cot-twohop` in a fresh Python process."""
    sets = [f"--set={item}" for item in overrides]
    return [
        sys.executable,
        "-m",
        "reasonlab",
        "study",
        "cot-twohop",
        *options,
        "--out",
        str(out),
        *sets,
    ]


@pytest.mark.slow
def test_paper_preset_starts_and_runs_a_few_steps_on_cpu(tmp_path):
    """The paper-size model (8 x 768) and data (2000 entities) on CPU: 2 small steps."""
    out = tmp_path / "paper"
    overrides = [
        "train.steps=2",
        "train.batch_size=8",
        "task.max_probe_size=4",
        "eval.at_start=false",
        "eval.batch_size=4",
        "log.progress=false",
        "task.khop=[]",
        "log.checkpoints=none",
    ]
    command = study_command(out, overrides, "--preset", "paper")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"]["cot-after-relations-s0"]
    assert run["status"] == "completed"
    assert run["num_parameters"] > 50_000_000
    assert run["data_stats"]["twohop_train_facts"] == 273_600


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_expands_and_its_cpu_data_builds(name):
    from reasonlab.tasks import build_task

    spec = STUDIES[name]
    assert study_configs(spec, "paper", seeds=1)
    for config in study_configs(spec, "cpu", seeds=1).values():
        data = build_task(config.task)
        assert data.probes and data.batch(0, 2, config.train.seed).units > 0
        if config.task.kind != "twohop":
            continue
        # lambda: two-hop training facts per ID atomic fact
        id_atomic = data.stats["id_atomic_facts"]
        assert id_atomic == round(
            config.task.num_entities * config.task.out_degree * (1 - config.task.ood_fraction)
        )
        assert data.stats["twohop_train_facts"] == round(config.task.lam * id_atomic)
        n = data.stats["twohop_train_facts"]
        noisy = data.stats["twohop_noisy_train_facts"] / n
        xi = config.task.noise_ratio
        # each chain is noisy with probability xi: within 4 binomial standard errors (the data
        # are seeded, so this is exact for these configs, and 0 noise means no noisy chain)
        assert abs(noisy - xi) <= 4 * math.sqrt(xi * (1 - xi) / n)


@pytest.mark.slow
def test_parallel_jobs_train_the_same_runs_as_one_job(tmp_path):
    """--jobs 2 trains each run in a spawned process of its own; the summary keeps the study's
    order and the runs' results match a sequential study's (one thread each, for equal sums)."""
    import os

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as each of the two workers
    try:
        one = run_study("cot-twohop", seeds=1, out=tmp_path / "one", overrides=STUDY_TINY)
    finally:
        torch.set_num_threads(threads)
    two = run_study("cot-twohop", seeds=1, out=tmp_path / "two", overrides=STUDY_TINY, jobs=2)
    order = list(study_configs(STUDIES["cot-twohop"], "cpu", 1))
    assert list(two["runs"]) == list(one["runs"]) == order
    for name, run in one["runs"].items():
        assert two["runs"][name]["status"] == "completed"
        assert two["runs"][name]["final"] == run["final"]
    with pytest.raises(ConfigError, match="--jobs"):
        run_study("cot-twohop", out=tmp_path / "three", overrides=STUDY_TINY, jobs=0)


@pytest.mark.slow
def test_sigterm_to_a_parallel_study_leaves_every_run_resumable(tmp_path):
    """SIGTERM to the study's process (as `timeout --foreground` or a scheduler sends it) while
    two workers train: the study and both runs in flight end as 'interrupted', no queued run
    starts, and the command exits."""
    import signal
    import time

    out = tmp_path / "study"
    overrides = [*STUDY_TINY, "train.steps=100000", "eval.every=50"]
    command = study_command(out, overrides, "--jobs", "2")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = out / "runs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until both workers have logged an evaluation past step 0
        logs = sorted(runs.glob("*/metrics.jsonl")) if runs.exists() else []
        if len(logs) == 2 and all(len(log.read_text().splitlines()) >= 2 for log in logs):
            break
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.5)
    else:
        pytest.fail("the workers did not start training")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    started = sorted(p.name for p in runs.iterdir())
    assert len(started) == 2  # the third run never started
    for name in started:
        assert json.loads((runs / name / "summary.json").read_text())["status"] == "interrupted"
