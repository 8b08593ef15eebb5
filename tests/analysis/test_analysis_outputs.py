"""What the analyze commands leave in RUN_DIR/analysis and when they refuse: one file per
checkpoint, over-training files that match their JSON, titles that fit, k-hop probes, the run
folder's lock and the data fingerprint."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import SMALL_TASK, exit_code, snapshot
from reasonlab.analysis.runs import TwoHopRun, run_logit_lens
from reasonlab.analysis.twohop_queries import (
    can_change,
    change_names,
    counterfactual_chains,
    position_labels,
    tail_table,
    target_names,
)
from reasonlab.config import ConfigError, TwoHopTaskConfig, config_from_dict
from reasonlab.reporting import plots
from reasonlab.runs.folder import RunDir
from reasonlab.tasks.twohop.generator import build_splits
from reasonlab.training.loop import train

TASK = {
    "kind": "twohop",
    **SMALL_TASK,
    "khop": [3],
    "cot": "after_relations",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A two-hop CoT run with 3-hop probes and checkpoints at steps 3 and 6."""
    run_dir = tmp_path_factory.mktemp("outputs") / "run"
    config = config_from_dict(
        {
            "task": TASK,
            "model": {"n_layers": 2, "d_model": 32, "n_heads": 2},
            "train": {"steps": 6, "batch_size": 32, "warmup_steps": 1},
            "eval": {"every": 3},
            "log": {"progress": False},
        }
    )
    train(config, run_dir)
    assert RunDir(run_dir).checkpoint_steps() == [3, 6]
    return run_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of the trained run, so that each test starts from an empty analysis/."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def analysis_files(run_dir: Path) -> set[str]:
    folder = run_dir / "analysis"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def assert_every_png_matches_its_json(run_dir: Path, steps: list[int]) -> None:
    """Each PNG has a JSON of the same name that says what it shows: one checkpoint for a
    ...-stepN file, every checkpoint of the run for an over-training file."""
    for png in (run_dir / "analysis").glob("*.png"):
        saved = json.loads(png.with_suffix(".json").read_text())
        shown = [c["step"] for c in saved["checkpoints"]]
        if png.stem.endswith("-over-training"):
            assert shown == steps, png.name
        else:
            assert [int(re.search(r"-step(\d+)$", png.stem).group(1))] == shown, png.name


# ----------------------------------------------------------------------------- file names


def test_two_checkpoints_analysed_one_after_the_other_both_remain(run):
    for step in ("3", "6"):
        assert exit_code("analyze", "logit-lens", run, "--checkpoint", step, "--queries", "8") == 0
        assert exit_code("analyze", "trace", run, "--checkpoint", step, "--queries", "8") == 0
    names = analysis_files(run)
    for step in (3, 6):
        for stem in (
            f"logit-lens-test_inferred_ood-bridge-step{step}",
            f"trace-test_inferred_ood-bridge-tail-resid-step{step}",
        ):
            assert {f"{stem}.json", f"{stem}.png"} <= names
            saved = json.loads((run / "analysis" / f"{stem}.json").read_text())
            assert [c["step"] for c in saved["checkpoints"]] == [step]
    assert not any("over-training" in name for name in names)  # only --checkpoint all
    assert_every_png_matches_its_json(run, [3, 6])


def test_checkpoint_all_writes_every_step_and_an_over_training_pair_that_stays_true(run):
    assert exit_code("analyze", "logit-lens", run, "--checkpoint", "all", "--queries", "8") == 0
    over = run / "analysis" / "logit-lens-test_inferred_ood-bridge-over-training"
    first = json.loads(over.with_suffix(".json").read_text())
    assert [c["step"] for c in first["checkpoints"]] == [3, 6] and first["queries"] == 8
    # A later single-checkpoint call adds its own files and leaves the over-training pair as it
    # was, still described by its JSON (the old scheme overwrote the JSON, not the plot).
    png_before = over.with_suffix(".png").read_bytes()
    assert exit_code("analyze", "logit-lens", run, "--checkpoint", "6", "--queries", "5") == 0
    assert over.with_suffix(".png").read_bytes() == png_before
    step6 = json.loads(
        (run / "analysis" / "logit-lens-test_inferred_ood-bridge-step6.json").read_text()
    )
    assert step6["queries"] == 5
    assert_every_png_matches_its_json(run, [3, 6])
    # A new checkpoint: the next `all` call rewrites the over-training pair to cover it.
    checkpoints = run / "checkpoints"
    shutil.copy(checkpoints / "step-6.safetensors", checkpoints / "step-9.safetensors")
    assert exit_code("analyze", "logit-lens", run, "--checkpoint", "all", "--queries", "8") == 0
    second = json.loads(over.with_suffix(".json").read_text())
    assert [c["step"] for c in second["checkpoints"]] == [3, 6, 9]
    assert over.with_suffix(".png").read_bytes() != png_before
    assert_every_png_matches_its_json(run, [3, 6, 9])


def test_trace_checkpoint_all_prints_every_step_and_plots_over_training(run, capsys):
    capsys.readouterr()
    code = exit_code(
        "analyze", "trace", run, "--checkpoint", "all", "--change", "head", "--queries", "8"
    )
    assert code == 0
    out = capsys.readouterr().out
    headers = re.findall(r"^step (\d+), (\d+) queries: clean tail top-1", out, re.M)
    assert [int(step) for step, _ in headers] == [3, 6]
    saved = json.loads(
        (
            run / "analysis" / "trace-test_inferred_ood-head-tail-resid-over-training.json"
        ).read_text()
    )
    for entry in saved["checkpoints"]:  # each step's printed grid is that step's grid
        block = out.split(f"step {entry['step']}, ")[1].splitlines()[2 : 2 + len(saved["layers"])]
        printed = [[float(v) for v in line.split()[1:]] for line in block]
        assert printed == [[round(v, 2) for v in row] for row in entry["top1"]]
    png = run / "analysis" / "trace-test_inferred_ood-head-tail-resid-over-training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_every_png_matches_its_json(run, [3, 6])


# ----------------------------------------------------------------------------- titles


@pytest.mark.parametrize("columns", [2, 4, 7])
def test_heatmap_titles_fit_inside_the_figure(tmp_path, monkeypatch, columns):
    """A long title on a narrow heatmap is wrapped, not clipped at the figure's edge."""
    boxes = []  # (title extent, figure width, figure height) of every figure saved
    save = plots.save_png

    def measure_then_save(fig, path, rect=None):
        fig.tight_layout(rect=rect)  # as save_png does before writing
        fig.canvas.draw()
        width, height = fig.canvas.get_width_height()
        for axis in fig.axes:
            if axis.get_title():
                boxes.append((axis.title.get_window_extent(), width, height))
        save(fig, path, rect)

    monkeypatch.setattr(plots, "save_png", measure_then_save)
    title = (
        "patch resid from counterfactual bridge: clean tail still top-1 "
        "(test_inferred_3hop_ood, step 12000, 300 queries)"
    )
    rows = [f"L{i}" for i in range(5)]
    labels = [f"p{i}" for i in range(columns)]
    plots.heatmap(np.zeros((5, columns)), rows, labels, title, tmp_path / "h.png")
    plots.lines({"step 1": [0.0] * 5}, rows, title, tmp_path / "l.png")
    assert len(boxes) == 2
    for box, width, height in boxes:
        assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height


# ----------------------------------------------------------------------------- probes


def test_a_wrong_probe_lists_only_probes_that_are_then_accepted(run, capsys):
    for command in ("logit-lens", "trace"):
        capsys.readouterr()
        assert exit_code("analyze", command, run, "--probe", "nope") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--probe" in err
        listed = err.split("is not one of ")[1].split(", ")
        assert "id_atomic" not in listed and "ood_atomic" not in listed
        assert "test_inferred_3hop_ood" in listed and "test_inferred_iid" in listed
        for probe in listed:
            code = exit_code("analyze", command, run, "--probe", probe, "--queries", "4")
            assert code == 0, probe
    assert exit_code("analyze", "logit-lens", run, "--probe", "id_atomic") == 2
    assert "one hop" in capsys.readouterr().err


def test_logit_lens_on_a_three_hop_probe_reads_each_bridge_at_its_own_position(run):
    subject = TwoHopRun(run)
    chains = subject.queries("test_inferred_3hop_ood", 300)
    model = subject.model(6)
    entities = subject.task.num_entities
    # h r1 r2 r3 b1 b2 t: bridge1 is predicted at r3 (3), bridge2 at b1 (4), the tail at b2 (5)
    tokens = np.stack(
        [chains.heads, *(entities + chains.relations.T), *chains.bridges.T, chains.tails], axis=1
    )
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens))
    predicted = logits.argmax(-1).numpy()
    # The lens reads the model through its own runs: equal logits up to rounding, which may flip
    # an argmax only where the top two logits are within 1e-5 (a near tie).
    top_two = logits.topk(2, dim=-1).values
    near_tie = (top_two[..., 0] - top_two[..., 1] < 1e-5).numpy()
    expected = {
        "bridge1": (3, chains.bridges[:, 0]),
        "bridge2": (4, chains.bridges[:, 1]),
        "tail": (5, chains.tails),
    }
    for target, (read, answers) in expected.items():
        lens = run_logit_lens(subject, "test_inferred_3hop_ood", target, "6", 300)
        assert lens["target"] == target and lens["hops"] == 3
        assert lens["read_position"] == read
        assert lens["positions"] == ["h", "r1", "r2", "r3", "b1", "b2"][: read + 1]
        top1 = lens["checkpoints"][0]["top1"][-1][read]  # last layer = the model's output
        expected_top1 = float(np.mean(predicted[:, read] == answers))
        assert abs(top1 - expected_top1) <= near_tie[:, read].mean() + 1e-6
        assert (run / "analysis" / f"logit-lens-test_inferred_3hop_ood-{target}-step6.png").exists()
    alias = run_logit_lens(subject, "test_inferred_3hop_ood", "bridge", "6", 300)
    assert alias["target"] == "bridge1" and alias["read_position"] == 3
    with pytest.raises(ConfigError, match="--target: 'bridge3' is not one of bridge1, bridge2"):
        run_logit_lens(subject, "test_inferred_3hop_ood", "bridge3", "6", 300)


def test_trace_on_a_three_hop_probe(run, capsys):
    capsys.readouterr()
    args = ["--probe", "test_inferred_3hop_iid", "--change", "bridge2", "--queries", "16"]
    assert exit_code("analyze", "trace", run, *args) == 0
    out = capsys.readouterr().out
    assert "columns: h r1 r2 r3 b1 b2)" in out
    saved = json.loads(
        (
            run / "analysis" / "trace-test_inferred_3hop_iid-bridge2-tail-resid-step6.json"
        ).read_text()
    )
    assert saved["hops"] == 3 and saved["read_position"] == 5
    # Patching positions before the changed bridge changes nothing: the inputs agree there.
    clean = saved["checkpoints"][0]["clean_top1"]
    for row in saved["checkpoints"][0]["top1"]:
        assert row[:5] == [pytest.approx(clean, abs=1e-4)] * 5
    # A change that comes after the target in the chain cannot change it: refused.
    assert (
        exit_code("analyze", "trace", run, *args[:2], "--change", "r3", "--target", "bridge1") == 2
    )
    assert "--change: changing r3 cannot change the bridge1" in capsys.readouterr().err
    assert exit_code("analyze", "trace", run, *args[:2], "--change", "r4") == 2
    assert "r1, r2, r3, bridge1, bridge2" in capsys.readouterr().err


@pytest.mark.parametrize("change", change_names(3))
@pytest.mark.parametrize("target", target_names(3))
def test_three_hop_counterfactuals_are_valid_chains_that_change_one_part(change, target):
    cfg = TwoHopTaskConfig(**{**TASK, "num_entities": 60})
    splits = build_splits(cfg)
    iid, _ = splits.khop[3]
    if not can_change(change, target):
        return
    clean, cf = counterfactual_chains(
        splits.graph, cfg.num_relations, iid, change, target, np.random.default_rng(0)
    )
    assert len(clean) == len(cf) > len(iid) // 4
    table = tail_table(splits.graph, cfg.num_relations)
    walk = np.stack([cf.heads, *cf.bridges.T, cf.tails], axis=1)
    clean_walk = np.stack([clean.heads, *clean.bridges.T, clean.tails], axis=1)
    written = int(change[-1]) if change.startswith("bridge") else None
    for hop in range(3):  # every hop follows the facts, except into a changed written bridge
        if hop + 1 != written:
            assert np.all(table[walk[:, hop], cf.relations[:, hop]] == walk[:, hop + 1])
    parts = {"head": (cf.heads, clean.heads)}
    parts |= {f"r{i + 1}": (cf.relations[:, i], clean.relations[:, i]) for i in range(3)}
    parts |= {f"bridge{i + 1}": (walk[:, i + 1], clean_walk[:, i + 1]) for i in range(2)}
    order = ["head", "r1", "bridge1", "r2", "bridge2", "r3"]
    for part, (new, old) in parts.items():
        if part == change:
            assert np.all(new != old)
        elif order.index(part) < order.index(change):
            assert np.all(new == old), part  # what comes before the change is kept
        elif part.startswith("r"):
            assert np.all(new == old), part  # relations after it too
    index = -1 if target == "tail" else int(target[-1])
    assert np.all(walk[:, index] != clean_walk[:, index])


def test_three_hop_position_labels_and_changes():
    assert position_labels("interleaved", 6, hops=3) == ["h", "r1", "b1", "r2", "b2", "r3", "t"]
    assert position_labels("none", 3, hops=3) == ["h", "r1", "r2", "r3"]
    assert position_labels("after_relations", 3) == ["h", "r1", "r2", "b"]
    assert change_names(3) == ["head", "r1", "r2", "r3", "bridge1", "bridge2"]
    assert change_names(2) == ["head", "r1", "r2", "bridge"]
    assert can_change("r2", "bridge2") and not can_change("r3", "bridge2")
    assert can_change("bridge1", "bridge2") and not can_change("bridge2", "bridge2")
    assert not can_change("bridge", "bridge") and can_change("bridge", "tail")


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("command", ["logit-lens", "trace"])
def test_analysis_refuses_a_run_folder_another_process_holds(run, capsys, command):
    """The trainer holds the run folder's lock; analysis must not write beside it."""
    before = snapshot(run)
    with RunDir(run).lock():  # a second open file description: flock conflicts as across processes
        assert exit_code("analyze", command, run, "--queries", "4") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run) in err and "in use" in err
    assert snapshot(run) == before
    assert exit_code("analyze", command, run, "--queries", "4") == 0  # free again once released


def test_analysis_refuses_data_that_differs_from_the_recorded_fingerprint(run, capsys):
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text())
    rebuilt = summary["data_fingerprint"]
    summary_path.write_text(json.dumps({**summary, "data_fingerprint": "0123456789abcdef"}))
    before = snapshot(run)
    assert exit_code("analyze", "logit-lens", run, "--queries", "4") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "0123456789abcdef" in err and rebuilt in err and "--allow-data-change" in err
    assert snapshot(run) == before
    assert exit_code("analyze", "logit-lens", run, "--queries", "4", "--allow-data-change") == 0
    saved = json.loads(
        (run / "analysis" / "logit-lens-test_inferred_ood-bridge-step6.json").read_text()
    )
    assert "0123456789abcdef" in saved["data_note"] and rebuilt in saved["data_note"]
