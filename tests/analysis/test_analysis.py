"""Logit lens, causal tracing, two-hop counterfactuals, the analyze commands and cot-circuit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import SMALL_TASK, exit_code, tiny_gpt
from reasonlab.analysis.logit_lens import first_top1_layer, logit_lens, ranks_of
from reasonlab.analysis.patching import hook_rows, patch_grid
from reasonlab.analysis.runs import run_logit_lens, run_trace
from reasonlab.analysis.twohop_queries import (
    counterfactual_chains,
    position_labels,
    query_tensors,
    tail_table,
)
from reasonlab.config import TwoHopTaskConfig, config_from_dict
from reasonlab.tasks.twohop.encoding import Vocabulary
from reasonlab.tasks.twohop.generator import build_splits
from reasonlab.training.loop import train

TASK = {
    "kind": "twohop",
    **SMALL_TASK,
}


# The GPT of the unit tests below: 30 symbols, 6 positions, 2 layers of width 32 with 4 heads.
GPT_SHAPE = {"vocab_size": 30, "max_seq_len": 6, "d_model": 32, "n_heads": 4}


# ----------------------------------------------------------------------------- logit lens


def assert_ranks_within_ties(ranks, logits, target, tolerance: float) -> None:
    """Ranks read on one path against logits (..., V) of another: each rank lies between the
    number of logits above the target's by more than ``tolerance`` and the number above it less
    ``tolerance``, so that rounding between the paths may move only near-tied logits."""
    target_logit = logits.gather(-1, target.unsqueeze(-1))
    assert ((logits > target_logit + tolerance).sum(-1) <= ranks).all()
    assert (ranks <= (logits > target_logit - tolerance).sum(-1)).all()


def test_ranks_of_counts_larger_logits():
    logits = torch.tensor([[0.1, 0.5, 0.3], [2.0, 1.0, 0.0]])
    assert ranks_of(logits, torch.tensor([1, 2])).tolist() == [0, 2]


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_logit_lens_last_layer_is_the_model_output(positions):
    model = tiny_gpt(**GPT_SHAPE, positions=positions)
    tokens = torch.randint(0, 30, (7, 5))
    target = torch.randint(0, 30, (7,))
    lens = logit_lens(model, tokens, target, batch_size=3)
    assert lens.rank.shape == (3, 7, 5)  # embeddings + 2 blocks
    logits = model(tokens)
    # the lens reads batches of 3 rows, the model one batch of 7: logits equal up to rounding
    assert_ranks_within_ties(lens.rank[-1], logits, target[:, None].expand(7, 5), 1e-5)
    probs = logits.softmax(-1).gather(-1, target[:, None, None].expand(7, 5, 1))[..., 0]
    assert torch.allclose(lens.prob[-1], probs, atol=1e-6)
    assert torch.allclose(lens.mrr(), (1 / (lens.rank.float() + 1)).mean(1))
    assert torch.allclose(lens.top1(), (lens.rank == 0).float().mean(1))


def test_logit_lens_reads_every_residual_layer_through_the_final_norm():
    model = tiny_gpt(**GPT_SHAPE)
    tokens = torch.randint(0, 30, (4, 5))
    target = torch.randint(0, 30, (4,))
    lens = logit_lens(model, tokens, target)
    _, cache = model.run_with_cache(tokens)
    middle = model.unembed(model.ln_final(cache["blocks.0.hook_resid_post"]))
    # every hook watched runs attention by hand, the lens's run fused: equal up to rounding
    assert_ranks_within_ties(lens.rank[1], middle, target[:, None].expand(4, 5), 1e-5)


def test_first_top1_layer():
    assert first_top1_layer([0.0, 0.4, 0.6, 1.0]) == 2
    assert first_top1_layer([0.0, 0.1]) is None


def test_lens_result_statistics_by_hand():
    """mean_rank / mrr / top1 average over the queries (axis 1), giving (layers, positions)."""
    from reasonlab.analysis.logit_lens import LensResult

    # 2 layers x 3 queries x 4 positions: no two axes of the same length
    rank = torch.tensor(
        [
            [[0, 1, 2, 3], [0, 3, 0, 9], [3, 2, 1, 0]],
            [[0, 0, 0, 0], [1, 1, 1, 1], [5, 0, 2, 0]],
        ]
    )
    lens = LensResult(["embed", "L1"], rank, torch.zeros(rank.shape))

    def close(actual: torch.Tensor, expected: list[list[float]]) -> None:
        torch.testing.assert_close(actual, torch.tensor(expected))

    close(lens.mean_rank(), [[1, 2, 1, 4], [2, 1 / 3, 1, 1 / 3]])
    close(lens.top1(), [[2 / 3, 0, 1 / 3, 1 / 3], [1 / 3, 2 / 3, 1 / 3, 2 / 3]])
    reciprocal = [
        [(1 + 1 + 1 / 4) / 3, (1 / 2 + 1 / 4 + 1 / 3) / 3, (1 / 3 + 1 + 1 / 2) / 3],
        [(1 + 1 / 2 + 1 / 6) / 3, (1 + 1 / 2 + 1) / 3, (1 + 1 / 2 + 1 / 3) / 3],
    ]
    close(lens.mrr()[:, :3], reciprocal)


# ----------------------------------------------------------------------------- patching


def test_patching_from_identical_input_changes_nothing():
    model = tiny_gpt(**GPT_SHAPE)
    tokens = torch.randint(0, 30, (6, 5))
    target = torch.randint(0, 30, (6,))
    grid = patch_grid(model, tokens, tokens.clone(), target, target, read_position=4)
    baseline = ranks_of(model(tokens)[:, 4], target).float().mean()
    assert torch.allclose(grid.rank, torch.full_like(grid.rank, float(baseline)))


def test_patching_the_read_position_at_the_last_layer_gives_the_counterfactual_output():
    model = tiny_gpt(**GPT_SHAPE)
    clean = torch.randint(0, 30, (6, 5))
    corrupt = torch.randint(0, 30, (6, 5))
    clean_target, corrupt_target = torch.randint(0, 30, (6,)), torch.randint(0, 30, (6,))
    for hook in ("resid", "attn_out", "mlp_out"):
        grid = patch_grid(model, clean, corrupt, clean_target, corrupt_target, 4, hook=hook)
        assert grid.rank.shape == (len(hook_rows(model, hook)), 5)
    grid = patch_grid(model, clean, corrupt, clean_target, corrupt_target, 4, hook="resid")
    corrupt_logits = model(corrupt)[:, 4]
    expected = ranks_of(corrupt_logits, clean_target).float().mean()
    assert grid.rank[-1, 4] == pytest.approx(float(expected), abs=1e-6)
    # Reading at the last position, every position (the read one included) is patched.
    assert not torch.isnan(grid.rank).any()
    # A position after the read position cannot matter and is not patched: its cells are NaN,
    # while every position up to the read position holds a value.
    short = patch_grid(model, clean, corrupt, clean_target, corrupt_target, 2)
    for values in (short.rank, short.prob, short.logit_diff, short.top1):
        assert torch.isnan(values[:, 3:]).all() and not torch.isnan(values[:, :3]).any()
    # Patching a later position than the one read leaves causal models unchanged.
    early = patch_grid(model, clean, corrupt, clean_target, corrupt_target, 2, positions=[3])
    baseline = ranks_of(model(clean)[:, 2], clean_target).float().mean()
    assert early.rank[:, 3].allclose(torch.full((3,), float(baseline)))


def test_patching_is_manual_intervention():
    """One cell of the grid equals a hand-made forward with the activation swapped in."""
    model = tiny_gpt(**GPT_SHAPE)
    clean, corrupt = torch.randint(0, 30, (5, 4)), torch.randint(0, 30, (5, 4))
    clean_target, corrupt_target = torch.randint(0, 30, (5,)), torch.randint(0, 30, (5,))
    grid = patch_grid(model, clean, corrupt, clean_target, corrupt_target, 3)
    _, cache = model.run_with_cache(corrupt)
    name = "blocks.0.hook_resid_post"

    def swap(activation, hook):
        activation = activation.clone()
        activation[:, 1] = cache[name][:, 1]
        return activation

    with torch.no_grad():
        logits = model.run_with_hooks(clean, [(name, swap)])[:, 3]
    diff = logits.gather(-1, clean_target[:, None]) - logits.gather(-1, corrupt_target[:, None])
    assert grid.logit_diff[1, 1] == pytest.approx(float(diff.mean()), abs=1e-5)


def test_patch_grid_clean_and_counterfactual_baselines():
    """clean_top1 reads the clean run and corrupt_top1 the counterfactual run (both against the
    clean target): here the clean answer is always top-1, and the counterfactual run keeps it
    for the half of the queries whose counterfactual equals the clean query."""
    model = tiny_gpt(**GPT_SHAPE)
    generator = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 30, (40, 5), generator=generator)
    corrupt = torch.randint(0, 30, (40, 5), generator=generator)
    clean_answer = model(clean)[:, 4].argmax(-1)
    changed = model(corrupt)[:, 4].argmax(-1) != clean_answer
    clean, corrupt = clean[changed][:6], corrupt[changed][:6]
    assert len(clean) == 6
    corrupt[3:] = clean[3:]  # three queries whose counterfactual is the clean query itself
    clean_target = model(clean)[:, 4].argmax(-1)
    corrupt_target = model(corrupt)[:, 4].argmax(-1)
    grid = patch_grid(model, clean, corrupt, clean_target, corrupt_target, 4)
    assert grid.clean_rank == 0.0 and grid.clean_top1 == 1.0
    assert grid.corrupt_top1 == pytest.approx(0.5)
    # the last layer at the read position is the counterfactual run's own output
    assert float(grid.top1[-1, 4]) == pytest.approx(grid.corrupt_top1)
    expected = (ranks_of(model(corrupt)[:, 4], clean_target) == 0).float().mean()
    assert grid.corrupt_top1 == pytest.approx(float(expected))


# ----------------------------------------------------------------------------- counterfactuals


@pytest.mark.parametrize("change", ["head", "r1", "r2", "bridge"])
def test_counterfactuals_are_valid_chains_that_change_one_part(change):
    cfg = TwoHopTaskConfig(**{**TASK, "num_entities": 60})
    splits = build_splits(cfg)
    table = tail_table(splits.graph, cfg.num_relations)
    clean, cf = counterfactual_chains(
        splits.graph, cfg.num_relations, splits.test_ood, change, "tail", np.random.default_rng(0)
    )
    assert len(clean) == len(cf) > 0
    assert np.all(table[cf.heads, cf.relations[:, 0]] == cf.bridges[:, 0]) or change == "bridge"
    assert np.all(table[cf.bridges[:, 0], cf.relations[:, 1]] == cf.tails)
    assert np.all(cf.tails != clean.tails)
    same = {
        "head": cf.heads == clean.heads,
        "r1": cf.relations[:, 0] == clean.relations[:, 0],
        "r2": cf.relations[:, 1] == clean.relations[:, 1],
    }
    for part, equal in same.items():
        assert (not equal.any()) if part == change else equal.all()
    if change == "bridge":
        assert np.all(cf.bridges[:, 0] != clean.bridges[:, 0])


def test_query_tensors_read_position_and_labels():
    cfg = TwoHopTaskConfig(**TASK, cot="after_relations")
    splits = build_splits(cfg)
    vocab = Vocabulary(cfg.num_entities, cfg.num_relations)
    tokens, target, read = query_tensors(splits.test_iid, "after_relations", vocab, "tail")
    assert read == 3 and tokens.shape[1] == 4
    assert torch.equal(tokens[:, 3], torch.from_numpy(splits.test_iid.bridges[:, 0]))
    assert torch.equal(target, torch.from_numpy(splits.test_iid.tails))
    assert position_labels("after_relations", read) == ["h", "r1", "r2", "b"]
    assert position_labels("interleaved", 3) == ["h", "r1", "b", "r2"]
    _, _, read_bridge = query_tensors(splits.test_iid, "none", vocab, "bridge")
    assert read_bridge == 2  # no CoT: the latent bridge is read at the last question position


# ----------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis-runs")
    runs = {}
    variants = {
        "after": {"task": {"cot": "after_relations"}},
        "interleaved-rotary-tied": {
            "task": {"cot": "interleaved"},
            "model": {"positions": "rotary", "tie_embeddings": True},
        },
        "none": {"task": {"cot": "none"}},
        "restated": {"task": {"cot": "restated", "khop": [3]}},
    }
    for name, extra in variants.items():
        config = config_from_dict(
            {
                "task": {**TASK, **extra["task"]},
                "model": {"n_layers": 2, "d_model": 32, "n_heads": 2, **extra.get("model", {})},
                "train": {"steps": 6, "batch_size": 32, "warmup_steps": 1},
                "eval": {"every": 3},
                "log": {"progress": False},
            }
        )
        train(config, root / name)
        runs[name] = root / name
    return runs


@pytest.mark.parametrize("name", ["after", "interleaved-rotary-tied", "none", "restated"])
def test_analysis_runs_on_every_gpt_configuration(trained_runs, name):
    run_dir = trained_runs[name]
    lens = run_logit_lens(run_dir, "test_inferred_iid", "bridge", "all", 50)
    assert [c["step"] for c in lens["checkpoints"]] == [3, 6]
    assert len(lens["checkpoints"][0]["mrr"]) == 3  # embed + 2 layers
    assert (run_dir / "analysis" / "logit-lens-test_inferred_iid-bridge-step6.png").stat().st_size
    assert (run_dir / "analysis" / "logit-lens-test_inferred_iid-bridge-over-training.png").exists()
    change = "r2" if name == "none" else "bridge"
    trace = run_trace(run_dir, "test_inferred_iid", change, "tail", "resid", "last", 50)
    name = f"trace-test_inferred_iid-{change}-tail-resid-step6.json"
    saved = json.loads((run_dir / "analysis" / name).read_text())
    assert saved["checkpoints"][0]["top1"] == trace["checkpoints"][0]["top1"]
    assert len(saved["checkpoints"][0]["top1"]) == 3


def test_analyze_cli_writes_json_and_png(trained_runs, capsys):
    run_dir = trained_runs["after"]
    trace_args = ["--change", "head", "--probe", "test_inferred_ood", "--hook", "mlp_out"]
    assert exit_code("analyze", "trace", run_dir, *trace_args, "--queries", "20") == 0
    assert "share still answering" in capsys.readouterr().out
    assert (run_dir / "analysis" / "trace-test_inferred_ood-head-tail-mlp_out-step6.png").exists()
    lens_args = ["--target", "tail", "--checkpoint", "6"]
    assert exit_code("analyze", "logit-lens", run_dir, *lens_args) == 0
    assert (run_dir / "analysis" / "logit-lens-test_inferred_ood-tail-step6.json").exists()


def saved_analysis(run_dir, prefix: str, step: int) -> dict:
    """The one JSON under RUN_DIR/analysis named ``prefix...`` that holds checkpoint ``step``."""
    found = []
    for path in sorted((run_dir / "analysis").glob(f"{prefix}*.json")):
        saved = json.loads(path.read_text())
        if "over-training" not in path.name and [c["step"] for c in saved["checkpoints"]] == [step]:
            found.append(saved)
    assert len(found) == 1, [p.name for p in (run_dir / "analysis").iterdir()]
    return found[0]


def test_analyze_cli_json_holds_the_library_values(trained_runs, capsys):
    """What `analyze logit-lens` / `analyze trace` save: the keys, (layers x positions) grids and
    the values that logit_lens / patch_grid give on the same checkpoint and queries."""
    from reasonlab.analysis.runs import TwoHopRun

    run_dir = trained_runs["after"]
    lens_args = ["analyze", "logit-lens", str(run_dir), "--target", "bridge", "--queries", "20"]
    assert exit_code(*lens_args, "--probe", "test_inferred_ood", "--checkpoint", "6") == 0
    trace_args = ["analyze", "trace", str(run_dir), "--change", "r1", "--hook", "attn_out"]
    assert exit_code(*trace_args, "--probe", "test_inferred_iid", "--queries", "20") == 0
    printed = capsys.readouterr().out

    subject = TwoHopRun(run_dir)
    model = subject.model(6)
    # logit lens of the bridge (h r1 r2 | b): read at r2, position 2
    saved = saved_analysis(run_dir, "logit-lens-test_inferred_ood-bridge", 6)
    chains = subject.queries("test_inferred_ood", 20)
    tokens, target, read = query_tensors(chains, "after_relations", subject.vocab, "bridge")
    assert (saved["probe"], saved["target"], saved["cot"]) == (
        "test_inferred_ood",
        "bridge",
        "after_relations",
    )
    assert saved["queries"] == len(chains) == 20 and saved["read_position"] == read == 2
    assert saved["positions"] == ["h", "r1", "r2"] and saved["layers"] == ["embed", "L1", "L2"]
    rank = logit_lens(model, tokens, target).rank.float()  # (layers, queries, positions)
    entry = saved["checkpoints"][0]
    expected = {
        "mean_rank": rank.mean(1),
        "mrr": (1 / (rank + 1)).mean(1),
        "top1": (rank == 0).float().mean(1),
    }
    for key, values in expected.items():
        assert np.array(entry[key]).shape == (3, 3), key
        np.testing.assert_allclose(entry[key], values.numpy(), rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(entry["top1_at_read"], expected["top1"][:, 2].numpy(), rtol=1e-5)
    assert entry["first_top1_layer"] == first_top1_layer(entry["top1_at_read"])

    # tracing: r1 changed, the tail read at the bridge (position 3), attention outputs patched
    saved = saved_analysis(run_dir, "trace-test_inferred_iid-r1-tail-attn_out", 6)
    chains = subject.queries("test_inferred_iid", 20)
    clean, counterfactual = counterfactual_chains(
        subject.splits.graph, 8, chains, "r1", "tail", np.random.default_rng(0)
    )
    clean_tokens, clean_target, read = query_tensors(
        clean, "after_relations", subject.vocab, "tail"
    )
    corrupt_tokens, corrupt_target, _ = query_tensors(
        counterfactual, "after_relations", subject.vocab, "tail"
    )
    assert saved["queries"] == len(clean) and saved["read_position"] == read == 3
    assert saved["layers"] == ["L1", "L2"] and saved["positions"] == ["h", "r1", "r2", "b"]
    entry = saved["checkpoints"][0]
    with torch.no_grad():
        clean_top1 = (ranks_of(model(clean_tokens)[:, 3], clean_target) == 0).float().mean()
        corrupt_top1 = (ranks_of(model(corrupt_tokens)[:, 3], clean_target) == 0).float().mean()
    assert entry["clean_top1"] == pytest.approx(float(clean_top1))
    assert entry["corrupt_top1"] == pytest.approx(float(corrupt_top1))
    grid = patch_grid(
        model, clean_tokens, corrupt_tokens, clean_target, corrupt_target, 3, hook="attn_out"
    )
    for key, values in (("top1", grid.top1), ("rank", grid.rank), ("logit_diff", grid.logit_diff)):
        assert np.array(entry[key]).shape == (2, 4), key
        np.testing.assert_allclose(entry[key], values.numpy(), atol=1e-4, err_msg=key)
    assert f"clean tail top-1 {float(clean_top1):.2f}" in printed
    assert f"counterfactual {float(corrupt_top1):.2f}" in printed


@pytest.mark.parametrize(
    "args, field",
    [
        (["logit-lens", "{run}", "--checkpoint", "99"], "--checkpoint"),
        (["logit-lens", "{run}", "--probe", "nope"], "--probe"),
        (["logit-lens", "{run}", "--target", "head"], "--target"),
        (["trace", "{run}", "--change", "tail"], "--change"),
        (["trace", "{run}", "--hook", "resid_mid"], "--hook"),
        (["trace", "{none}", "--change", "bridge"], "--change"),
        (["logit-lens", "{missing}"], "no such run folder"),
    ],
)
def test_analyze_bad_input_exits_2(trained_runs, tmp_path, capsys, args, field):
    values = {
        "run": trained_runs["after"],
        "none": trained_runs["none"],
        "missing": tmp_path / "missing",
    }
    assert exit_code("analyze", *(a.format(**values) for a in args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err


@pytest.mark.slow
def test_cot_circuit_study_reports_both_stages(tmp_path, trained_runs):
    from reasonlab.studies import run_study

    overrides = [f"task.{k}={v}" for k, v in TASK.items() if k != "kind"] + [
        "task.khop=[]",
        "model.n_layers=2",
        "model.d_model=32",
        "model.n_heads=2",
        "train.steps=6",
        "train.batch_size=32",
        "train.warmup_steps=1",
        "eval.every=3",
        "log.progress=false",
    ]
    out = tmp_path / "circuit"
    result = run_study("cot-circuit", "cpu", 1, out, overrides)
    analysis = result["analysis"]
    assert set(analysis) == {"no-cot-s0", "cot-after-relations-s0", "cot-interleaved-s0"}
    stage1 = analysis["cot-after-relations-s0"]["stage1"]
    assert set(stage1) == {"ID", "OOD"} and stage1["OOD"]["position"] == "r2"
    verdicts = analysis["cot-after-relations-s0"]["verdicts"]
    assert set(verdicts["OOD"]) >= {
        "bridge_position_breaks_at_every_layer",
        "h_position_never_breaks",
        "r1_position_never_breaks",
    }
    assert "bridge" not in analysis["no-cot-s0"]["stage2"]["ID"]
    report = (out / "report.html").read_text()
    assert "Stage 1" in report and "Stage 2" in report
    assert report.count("data:image/png;base64,") >= 2 + 3 * 2 + 2 * 3
    saved = json.loads((out / "summary.json").read_text())
    assert saved["analysis"]["cot-interleaved-s0"]["cot"] == "interleaved"
