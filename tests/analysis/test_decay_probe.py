"""The decay probe against the selective scan itself: the weight with which position j's input
reaches position i, computed from the probe's cumulative decays, equals the scan's output at i
for an input that is 1 at j and 0 elsewhere; alpha equals the explicit product of decays."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from helpers import run_cli, tiny_mamba
from reasonlab.analysis.ssm import _mixer_inputs, decay_profile
from reasonlab.models.mamba import Mamba
from reasonlab.models.scan import selective_scan_reference


def decaying_mamba(seed: int = 0) -> Mamba:
    model = tiny_mamba(7, seed=seed, d_model=8, d_state=3, dt_rank=2)
    with torch.no_grad():  # larger deltas than the initialisation, so that decays matter
        for block in model.blocks:
            block.mixer.dt_proj.bias.add_(3.0)
    return model.double()


def test_probe_scores_are_the_scans_weights():
    model = decaying_mamba()
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6, 1, 2], [3, 3, 1, 0, 2, 6, 5, 4]])
    query = torch.tensor([[5, 7], [4, 6]])
    source = torch.tensor([[1, 2], [0, 3]])
    layers = decay_profile(model, tokens, query, source)
    inputs = _mixer_inputs(model, tokens)
    for index, layer in enumerate(layers):
        mixer = model.blocks[index].mixer
        A = -torch.exp(mixer.A_log.double())
        delta, B, C = (inputs[index][k] for k in ("delta", "B", "C"))
        expected: dict[int, list[float]] = {}
        for row in range(2):
            for i, j in zip(query[row].tolist(), source[row].tolist(), strict=True):
                u = torch.zeros(1, A.shape[0], tokens.shape[1], dtype=torch.float64)
                u[0, :, j] = 1.0
                y = selective_scan_reference(
                    u, delta[row].T[None], A, B[row].T[None], C[row].T[None]
                )  # (1, d, L): sum_n C_i alpha B_j delta_j in every channel
                weight = y[0, :, i].abs().max().item()
                # alpha from the explicit product of the decays between j and i
                product = torch.ones_like(A)
                for k in range(j + 1, i + 1):
                    product = product * torch.exp(delta[row, k][:, None] * A)
                alpha = product.max().item()
                cb = abs(float((C[row, i] * B[row, j]).sum()))
                expected.setdefault(i - j, []).append((weight, alpha, cb))
        for position, distance in enumerate(layer["distances"]):
            weights, alphas, cbs = zip(*expected[distance], strict=True)
            median = lambda v: float(torch.tensor(v).median())  # noqa: E731 (torch's lower median)
            assert layer["log10_score"][position] == pytest.approx(math.log10(median(weights)))
            assert layer["log10_alpha_max"][position] == pytest.approx(math.log10(median(alphas)))
            assert layer["log10_cb"][position] == pytest.approx(math.log10(median(cbs)))
        a = layer["step_decay_median"]
        assert 0 < a <= 1
        assert layer["log10_required"] == pytest.approx(
            [-d * math.log10(a) for d in layer["distances"]]
        )


def test_a_query_before_its_source_is_refused():
    model = decaying_mamba()
    tokens = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="after its source"):
        decay_profile(model, tokens, torch.tensor([[1]]), torch.tensor([[2]]))


COPY_MAMBA = {
    "task": {
        "kind": "copy",
        "vocab_size": 6,
        "min_length": 2,
        "max_length": 5,
        "test_lengths": [3, 5, 7],
        "num_train": 300,
        "num_test": 12,
    },
    "model": {"kind": "mamba", "n_layers": 2, "d_model": 16, "d_state": 4},
    "train": {"steps": 4, "batch_size": 16, "device": "cpu"},
    "eval": {"every": 2},
    "log": {"progress": False},
}


def test_analyze_decay_on_a_copy_run(tmp_path, write_yaml, capsys):
    """The CLI trains nothing: it reads the run's last checkpoint and writes JSON + PNG with one
    distance per probe length (plain COPY: every copied token sits n positions back)."""
    config = write_yaml(yaml.safe_dump(COPY_MAMBA), name="copy.yaml")
    run_dir = tmp_path / "run"
    assert run_cli(["run", config, "--out", run_dir], capsys)[0] == 0
    code, out, err = run_cli(["analyze", "decay", run_dir, "--rows", "5"], capsys)
    assert code == 0, err
    result = json.loads((run_dir / "analysis" / "decay-all-step4.json").read_text())
    assert (run_dir / "analysis" / "decay-all-step4.png").stat().st_size > 0
    assert [layer["distances"] for layer in result["layers"]] == [[3, 5, 7]] * 2
    assert all(layer["pairs"] == 5 * (3 + 5 + 7) for layer in result["layers"])
    assert "layer 1" in out
    code, _, err = run_cli(["analyze", "decay", run_dir, "--probe", "len9"], capsys)
    assert code == 2 and "--probe" in err and len(err.strip().splitlines()) == 1


def test_analyze_decay_refuses_other_runs(tmp_path, write_yaml, capsys):
    gpt = {**COPY_MAMBA, "model": {"kind": "gpt", "n_layers": 1, "d_model": 16, "n_heads": 2}}
    config = write_yaml(yaml.safe_dump(gpt), name="gpt.yaml")
    run_dir = tmp_path / "gpt"
    assert run_cli(["run", config, "--out", run_dir], capsys)[0] == 0
    code, _, err = run_cli(["analyze", "decay", run_dir], capsys)
    assert code == 2 and "Mamba" in err and len(err.strip().splitlines()) == 1
