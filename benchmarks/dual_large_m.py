"""Benchmark: the random-feature-vs-softmax gap of a trained run's heads at large m.

    python benchmarks/dual_large_m.py RUN_DIR --layer L [--draws N] [--max-log2-m K]

The rf estimate is computed in log space in chunks of 65,536 features (no dual gradient step, so
m up to 2^22 fits in memory and minutes); the queries are the last positions of the run's first
4 probe rows, as in ``reasonlab analyze dual``. Prints, per head, the variance scale, the mean
relative gap per m over queries x draws and the fitted log-log slope (-0.5 at the Monte Carlo
rate). Used for docs/studies/icl-dual.md: whether the rate shows on trained heads once m is far
above their variance scale.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor

from reasonlab.analysis.dual import loglog_slope, softmax_attention, variance_scale
from reasonlab.analysis.dual_check import example_inputs, layer_inputs
from reasonlab.runs.folder import RunDir

CHUNK = 1 << 16


def rf_weights_log_space(q: Tensor, K: Tensor, m: int, generator: torch.Generator) -> Tensor:
    """The random-feature weights w_i of analysis.dual, summed over chunks of omegas in log space
    (the same estimator as random_feature_weights, without materialising m features at once)."""
    scale = q.shape[-1] ** -0.25
    query, keys = q * scale, K * scale
    partial = []
    for start in range(0, m, CHUNK):
        omega = torch.randn(min(CHUNK, m - start), q.shape[-1], generator=generator, dtype=q.dtype)
        log_query = query @ omega.T - 0.5 * (query * query).sum()
        log_keys = keys @ omega.T - 0.5 * (keys * keys).sum(-1, keepdim=True)
        partial.append(torch.logsumexp(log_keys + log_query, dim=1))
    return torch.softmax(torch.logsumexp(torch.stack(partial), dim=0), dim=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--heads", default="all", help="comma-separated heads, or all")
    parser.add_argument("--draws", type=int, default=32, help="omegas per query and m")
    parser.add_argument("--min-log2-m", type=int, default=10)
    parser.add_argument("--max-log2-m", type=int, default=18)
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    config = run.load_config()
    model = run.load_model(config=config).double()
    inputs = example_inputs(config, 4)
    if inputs.is_floating_point():
        inputs = inputs.double()
    ms = [2**k for k in range(args.min_log2_m, args.max_log2_m + 1, 2)]
    print(f"{run.path.name} layer {args.layer}, m {ms[0]}..{ms[-1]}, {args.draws} draws/query")
    heads = range(model.cfg.n_heads)
    if args.heads != "all":
        heads = [int(part) for part in args.heads.split(",")]
    for head in heads:
        position = inputs.shape[1] - 1
        cases = [layer_inputs(model, inputs, args.layer, head, position, row) for row in range(4)]
        generator = torch.Generator().manual_seed(0)
        gaps = []
        for m in ms:
            errors = []
            for q, K, V in cases:
                exact = softmax_attention(q, K, V)
                for _ in range(args.draws):
                    estimate = rf_weights_log_space(q, K, m, generator) @ V
                    errors.append(float((estimate - exact).norm() / exact.norm()))
            gaps.append(math.fsum(errors) / len(errors))
        print(
            f"head {head}: variance scale {variance_scale(cases):.1e}, gaps "
            + " ".join(f"{gap:.4f}" for gap in gaps)
            + f", slope {loglog_slope(ms, gaps):.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
