"""The logit lens and causal tracing on runs of token tasks other than the generated two-hop task
(COPY, DP), and the one-line refusal for in-context regression (no tokens)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import one_line_error, run_cli
from reasonlab.analysis.logit_lens import logit_lens, ranks_of
from reasonlab.analysis.patching import patch_grid
from reasonlab.analysis.token_queries import (
    aligned_rows,
    counterfactual_rows,
    sample_rows,
    scored_targets,
    target_positions,
)
from reasonlab.config import config_from_dict
from reasonlab.runs.folder import RunDir
from reasonlab.tasks import build_task
from reasonlab.tasks.base import as_probe
from reasonlab.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "train": {"steps": 6, "batch_size": 16, "warmup_steps": 1, "device": "cpu"},
    "eval": {"every": 3},
    "log": {"progress": False},
}
TASKS: dict[str, dict[str, Any]] = {
    "copy": {
        "task": {
            "kind": "copy",
            "vocab_size": 5,
            "min_length": 2,
            "max_length": 4,
            "test_lengths": [3],
            "num_train": 200,
            "num_test": 24,
        },
        "model": {"n_layers": 2, "d_model": 16, "n_heads": 2},
    },
    # arithmetic: prompts differ in length (parentheses), so answers sit at different positions
    "dp": {
        "task": {"kind": "dp", "problem": "arithmetic", "mode": "cot", "length": 3},
        "model": {"kind": "mamba", "n_layers": 1, "d_model": 16, "d_state": 4},
    },
    "icl": {
        "task": {"kind": "icl", "dim": 3, "n_points": 5, "num_test": 16},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
    },
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("token-analysis")
    folders = {}
    for name, parts in TASKS.items():
        extra = {"num_train": 200, "num_test": 24} if name == "dp" else {}
        config = {**TINY, **parts, "task": {**parts["task"], **extra}}
        train(config_from_dict(config), root / name)
        folders[name] = root / name
    return folders


def saved(run_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((run_dir / "analysis" / name).read_text())


# ----------------------------------------------------------------------------- queries


def toy_probe():
    """Four rows: prompt ``x y <sep>`` (ids 5 6 1) at two lengths, completion then <eos> (2)."""
    tokens = torch.tensor(
        [
            [5, 6, 1, 7, 2, 0],
            [6, 5, 1, 8, 2, 0],
            [5, 5, 1, 7, 2, 0],
            [5, 5, 6, 1, 8, 2],
        ]
    )
    prompt_len = torch.tensor([3, 3, 3, 4])
    return as_probe(tokens, prompt_len, torch.zeros_like(tokens, dtype=torch.bool), 0, {})


def test_one_token_targets_keep_the_rows_of_the_most_common_position():
    probe = toy_probe()
    assert target_positions(probe, "first").tolist() == [3, 3, 3, 4]
    rows, position = aligned_rows(probe, "first")
    assert rows.tolist() == [0, 1, 2] and position == 3
    assert sample_rows(rows, 2).tolist() in ([0, 1], [0, 2], [1, 2])


def test_counterfactual_rows_differ_in_the_target_token():
    probe = toy_probe()
    rows, position = aligned_rows(probe, "first")
    clean, partner = counterfactual_rows(
        probe.tokens, rows, rows, position, np.random.default_rng(0)
    )
    # rows 0 and 2 answer 7, row 1 answers 8: every row has a partner with another answer
    assert clean.tolist() == [0, 1, 2]
    assert partner.tolist() == [1, partner[1].item(), 1] and partner[1].item() in (0, 2)
    same = torch.tensor([0, 2])  # both answer 7: no counterfactual, both dropped
    kept, _ = counterfactual_rows(probe.tokens, same, same, position, np.random.default_rng(0))
    assert kept.numel() == 0


def test_scored_targets_read_each_token_one_position_before():
    probe = toy_probe()
    tokens, following, read, positions = scored_targets(probe, torch.arange(4))
    assert torch.equal(following[:, :-1], tokens[:, 1:])
    assert read[0].tolist() == [False, False, True, True, False, False]  # 7 and <eos>
    assert read[3].tolist() == [False, False, False, True, True, False]  # given 6 is not scored
    assert positions == [2, 3, 4]


# ----------------------------------------------------------------------------- run folders


def test_logit_lens_on_copy_reads_every_scored_token(runs, capsys):
    run_dir = runs["copy"]
    code, out, err = run_cli(["analyze", "logit-lens", run_dir, "--queries", "10"], capsys)
    assert code == 0, err
    assert "from layer" in out
    result = saved(run_dir, "logit-lens-len3-scored-step6.json")
    assert (result["task"], result["probe"], result["target"]) == ("copy", "len3", "scored")
    # len3: x x x <sep> c c c <eos>; the copy and <eos> are read at <sep> and the 3 copies
    assert result["read_positions"] == [3, 4, 5, 6] and result["positions"][0] == "<sep>"
    assert result["layers"] == ["embed", "L1", "L2"] and result["queries"] == 10

    probe = build_task(RunDir(run_dir).load_config().task).probes["len3"]
    rows = sample_rows(torch.arange(len(probe)), 10)
    tokens = probe.tokens[rows]
    rank = logit_lens(RunDir(run_dir).load_model(6), tokens, tokens.roll(-1, dims=1)).rank
    entry = result["checkpoints"][0]
    expected = (rank[:, :, 3:7] == 0).float().mean(1)  # every row is scored at 4..7
    np.testing.assert_allclose(entry["top1"], expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(entry["top1_at_read"], expected.mean(1).numpy(), rtol=1e-6)


def test_trace_on_a_dp_mamba_run_patches_from_another_row(runs, capsys):
    run_dir = runs["dp"]
    args = ["analyze", "trace", run_dir, "--target", "answer", "--hook", "mixer_out"]
    code, out, err = run_cli([*args, "--probe", "test", "--queries", "8"], capsys)
    assert code == 0, err
    assert "share still answering the clean target" in out
    result = saved(run_dir, "trace-test-row-answer-mixer_out-step6.json")
    assert (result["task"], result["change"], result["hook"]) == ("dp", "row", "mixer_out")

    probe = build_task(RunDir(run_dir).load_config().task).probes["test"]
    pool, position = aligned_rows(probe, "answer")
    assert result["read_position"] == position - 1 and len(result["positions"]) == position
    clean, partner = counterfactual_rows(
        probe.tokens, sample_rows(pool, 8), pool, position, np.random.default_rng(0)
    )
    assert result["queries"] == len(clean) > 0
    assert (probe.tokens[clean, position] != probe.tokens[partner, position]).all()
    model = RunDir(run_dir).load_model(6)
    clean_target, corrupt_target = probe.tokens[clean, position], probe.tokens[partner, position]
    grid = patch_grid(
        model,
        probe.tokens[clean, :position],
        probe.tokens[partner, :position],
        clean_target,
        corrupt_target,
        position - 1,
        hook="mixer_out",
    )
    entry = result["checkpoints"][0]
    np.testing.assert_allclose(entry["top1"], grid.top1.numpy(), atol=1e-6)
    with torch.no_grad():
        logits = model(probe.tokens[clean, :position])[:, -1]
    clean_top1 = float((ranks_of(logits, clean_target) == 0).float().mean())
    assert entry["clean_top1"] == pytest.approx(clean_top1)


def test_one_token_lens_and_over_training_on_copy(runs, capsys):
    run_dir = runs["copy"]
    args = ["analyze", "logit-lens", run_dir, "--target", "last", "--checkpoint", "all"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "last top-1 at position" in out
    result = saved(run_dir, "logit-lens-len3-last-over-training.json")
    assert [c["step"] for c in result["checkpoints"]] == [3, 6]
    # the last copied symbol (position 6) is read at position 5, from the tokens before it
    assert result["read_position"] == 5 and len(result["positions"]) == 6
    assert (run_dir / "analysis" / "logit-lens-len3-last-over-training.png").stat().st_size


@pytest.mark.parametrize(
    "run, args, field",
    [
        ("copy", ["trace", "--change", "bridge"], "--change"),
        ("copy", ["logit-lens", "--target", "bridge"], "--target"),
        ("copy", ["trace", "--target", "scored"], "--target"),
        ("copy", ["logit-lens", "--probe", "len9"], "--probe"),
        ("dp", ["trace", "--hook", "attn_out"], "--hook"),
        ("icl", ["logit-lens"], "need a token task"),
        ("icl", ["trace"], "need a token task"),
    ],
)
def test_refusals_are_one_line(runs, capsys, run, args, field):
    command, *options = args
    code, _, err = run_cli(["analyze", command, runs[run], *options], capsys)
    assert code == 2
    assert field in one_line_error(err)
