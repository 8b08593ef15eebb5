"""The benchmarks' arithmetic: the FLOPs a GPT step is credited with (utilization)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from reasonlab.bench.step import gpt_step_flops, matmul_rate
from reasonlab.models.gpt import GPT, GPTConfig


@pytest.mark.parametrize(("layers", "width", "vocab", "batch", "seq_len"), [(2, 32, 50, 16, 9)])
def test_step_flops_match_torch_flop_counter(layers, width, vocab, batch, seq_len):
    """torch's FlopCounterMode counts the linear layers' matmuls of a forward + backward step
    (not SDPA's on a CPU); gpt_step_flops is that plus the causal attention's 4 t d per token
    and layer (t: the keys seen on average), times 3 for the backward pass."""
    model = GPT(GPTConfig(vocab, seq_len, layers, width, n_heads=4))
    tokens = torch.randint(0, vocab, (batch, seq_len))
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1)).backward()
    attention = 3 * batch * (seq_len - 1) * layers * 4 * (seq_len / 2) * width
    assert counter.get_total_flops() == pytest.approx(
        gpt_step_flops(layers, width, vocab, batch, seq_len) - attention, rel=1e-9
    )


def test_matmul_rate_is_positive_and_finite():
    rate = matmul_rate(torch.float32, size=64, seconds=0.01)
    assert 0 < rate < float("inf")


def test_scan_benchmark_times_the_parallel_scan_beside_the_others(capsys):
    """The scan table has a row for the parallel scan (and mambapy's where installed); the
    module's command line runs the same benchmark (``--device cuda`` on a lent GPU)."""
    from reasonlab.bench.scan import format_scan_table, main, scan_benchmark

    methods = ("reasonlab", "reasonlab_eager", "reasonlab_parallel", "sequential")
    result = scan_benchmark(
        lengths=(5,), batch=2, d_inner=4, d_state=2, repeats=1, memory=False, methods=methods
    )
    assert {case["method"] for case in result["cases"]} == set(methods)
    assert result["device"] == "cpu" and result["reasonlab_ran"] == {5: "chunked"}
    assert all(case["median_s"] >= 0 for case in result["cases"])
    assert "| 5 | reasonlab_parallel |" in format_scan_table(result)
    main(["--lengths", "3", "--batch", "1", "--d-inner", "2", "--d-state", "2",
          "--repeats", "1", "--no-memory"])  # fmt: skip
    out, err = capsys.readouterr()
    assert json.loads(out)["shape"] == {"batch": 1, "d_inner": 2, "d_state": 2}
    assert "reasonlab_parallel" in err
