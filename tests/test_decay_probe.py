"""The decay probe against the selective scan itself: the weight with which position j's input
reaches position i, computed from the probe's cumulative decays, equals the scan's output at i
for an input that is 1 at j and 0 elsewhere; alpha equals the explicit product of decays."""

from __future__ import annotations

import math

import pytest
import torch

from reasonlab.analysis.ssm import _mixer_inputs, decay_profile
from reasonlab.models.mamba import Mamba, MambaConfig
from reasonlab.models.scan import selective_scan_reference


def tiny_mamba(seed: int = 0) -> Mamba:
    torch.manual_seed(seed)
    model = Mamba(MambaConfig(vocab_size=7, n_layers=2, d_model=8, d_state=3, dt_rank=2))
    with torch.no_grad():  # larger deltas than the initialisation, so that decays matter
        for block in model.blocks:
            block.mixer.dt_proj.bias.add_(3.0)
    return model.double()


def test_probe_scores_are_the_scans_weights():
    model = tiny_mamba()
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
    model = tiny_mamba()
    tokens = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="after its source"):
        decay_profile(model, tokens, torch.tensor([[1]]), torch.tensor([[2]]))
