"""Decoding cost against context length (decode_cost) and the mamba-cost study end to end."""

from __future__ import annotations

import html
import json
import math

import pytest
import torch

from helpers import run_cli, tiny_gpt, tiny_mamba
from reasonlab.bench.decode_cost import decode_cost, fit_slope, state_bytes, state_tensors
from reasonlab.studies import STUDIES, mamba_cost, study_configs

VOCAB = 12
FLOAT_BYTES = 4


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_gpt_state_grows_exactly_linearly_with_the_length(positions):
    model = tiny_gpt(VOCAB, 64, seed=None, positions=positions)
    rows = decode_cost(model, [4, 8, 16], batch_size=2, new_tokens=2, repeats=1)
    assert [r["length"] for r in rows] == [4, 8, 16]
    for row in rows:  # keys and values, per layer: (batch, length, d_model) floats each
        assert row["state_bytes"] == 2 * 2 * 2 * row["length"] * 16 * FLOAT_BYTES
        assert row["state_bytes_per_row"] * 2 == row["state_bytes"]
        assert row["ms_per_token"] > 0
        assert "peak_extra_mib" not in row  # measured on CUDA only
    assert rows[1]["state_bytes"] == 2 * rows[0]["state_bytes"]
    assert rows[2]["state_bytes"] == 4 * rows[0]["state_bytes"]


def test_mamba_state_is_constant():
    model = tiny_mamba(VOCAB, seed=None)
    rows = decode_cost(model, [4, 8, 16], new_tokens=2, repeats=2)
    cfg = model.cfg
    per_layer = cfg.d_inner * (cfg.d_conv - 1) + cfg.d_inner * cfg.d_state  # conv + SSM state
    assert {r["state_bytes"] for r in rows} == {cfg.n_layers * per_layer * FLOAT_BYTES}
    assert all(r["ms_per_token"] > 0 for r in rows)


def test_decoding_does_not_change_the_model_output():
    """decode_cost feeds the model under inference mode and leaves it in eval mode."""
    model = tiny_gpt(VOCAB, 64, seed=None, positions="rotary").train()  # decode_cost sets eval
    tokens = torch.randint(0, VOCAB, (1, 6))
    before = model(tokens)
    decode_cost(model, [4], new_tokens=1, repeats=1)
    assert not model.training
    torch.testing.assert_close(model(tokens), before)


def test_state_tensors_walks_nested_containers_once_per_tensor():
    shared = torch.zeros(3)

    class Holder:
        def __init__(self) -> None:
            self.items = [shared, {"again": shared, "other": torch.ones(2, 2)}]
            self.length = 5

    holder = Holder()
    assert len(state_tensors(holder)) == 2
    assert state_bytes(holder) == (3 + 4) * FLOAT_BYTES


def test_fit_slope_recovers_power_laws():
    lengths = [64, 128, 256, 512]
    assert fit_slope(lengths, [3.0 * n**2 for n in lengths]) == pytest.approx(2.0)
    assert fit_slope(lengths, [7.0] * 4) == pytest.approx(0.0, abs=1e-12)
    assert fit_slope(lengths, [math.sqrt(n) for n in lengths]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two or more"):
        fit_slope([64], [1.0])
    with pytest.raises(ValueError, match="positive"):
        fit_slope([64, 128], [0.0, 1.0])


def test_presets_pair_a_gpt_and_a_mamba_that_reach_every_length():
    for preset, lengths in mamba_cost.LENGTHS.items():
        configs = study_configs(STUDIES["mamba-cost"], preset, seeds=1)
        gpt, mamba = configs["gpt-s0"].model, configs["mamba-s0"].model
        assert (gpt.kind, mamba.kind) == ("gpt", "mamba")
        assert (gpt.n_layers, gpt.d_model) == (mamba.n_layers, mamba.d_model)
        assert gpt.max_seq_len >= max(lengths) + mamba_cost.NEW_TOKENS


TINY_STUDY = [
    "model.n_layers=1",
    "model.d_model=16",
    "model.max_seq_len=40",
    "task.num_train=64",
    "task.num_test=8",
    "train.steps=2",
    "train.batch_size=8",
    "train.warmup_steps=1",
    "eval.every=2",
    "log.progress=false",
]


@pytest.mark.slow
def test_study_measures_both_families_and_reports_the_slopes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mamba_cost, "LENGTHS", {"cpu": [4, 8, 16, 32]})
    monkeypatch.setattr(mamba_cost, "REPEATS", 1)
    out = tmp_path / "study"
    args = ["study", "mamba-cost", "--preset", "cpu", "--seeds", "2", "--out", out]
    code, _, err = run_cli([*args, *(a for o in TINY_STUDY for a in ("--set", o))], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    analysis = summary["analysis"]
    assert analysis == json.loads((out / "cost.json").read_text())
    gpt, mamba = analysis["families"]["gpt"], analysis["families"]["mamba"]
    # the GPT's 40 positions hold a 16-token prompt and 16 decoded tokens, not a 32-token one
    assert [r["length"] for r in gpt["rows"]] == [4, 8, 16]
    assert analysis["runs"]["gpt-s0"]["skipped_lengths"] == [32]
    assert [r["length"] for r in mamba["rows"]] == [4, 8, 16, 32]
    assert gpt["slopes"]["state_bytes"] == pytest.approx(1.0)
    assert mamba["slopes"]["state_bytes"] == pytest.approx(0.0, abs=1e-12)
    assert (out / "cost.png").stat().st_size > 1000
    report = html.unescape((out / "report.html").read_text())
    assert "Fitted log-log slopes" in report
    gpt_slope = mamba_cost._fmt_slope(gpt["slopes"]["ms_per_token"])
    assert f"GPT: time per token slope {gpt_slope} over all lengths" in report
    assert "Mamba: time per token slope" in report and "state bytes slope 0.00" in report
    assert "gpt-s0 skips lengths [32]" in report
    assert "GPT ms/token" in report and "Mamba state bytes" in report
    # the cost claim, decided over the two seeds on the state-bytes slopes (1 against 0)
    [cost] = [c for c in summary["claims"] if c["id"] == "cost"]
    assert cost["verdict"] == "reproduces"
    assert cost["per_seed"]["gpt state slope"] == pytest.approx([1.0, 1.0])
    assert "reproduces here - state-bytes log-log slope per seed, GPT 1.00, 1.00" in report
