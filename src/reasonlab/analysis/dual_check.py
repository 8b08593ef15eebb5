"""The dual-model check (dual.py) on a trained GPT's head, and as an analysis that writes its
result: ``layer_inputs`` reads a head's (q, K, V) as its attention sees them, ``head_gaps``
measures the gaps against m on them, and ``run_dual`` runs the check on random inputs or on a
run's checkpoint and writes analysis/dual.json and .png."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reasonlab.analysis.dual import (
    DEFAULT_MS,
    DEFAULT_SEEDS,
    NOTE,
    Case,
    gap_curve,
    measure_gaps,
    softmax_attention,
    variance_scale,
)
from reasonlab.config import ConfigError, RunConfig
from reasonlab.models.attention import apply_rotary

# ------------------------------------------------------------------------- a trained GPT's head


def _check_index(option: str, value: int, count: int) -> None:
    if not 0 <= value < count:
        raise ConfigError(f"{option}: {value} is out of range (0..{count - 1})")


def _head_tensors(
    model: Any, inputs: Tensor, layer: int, head: int, position: int, row: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q (d,), K and V (position + 1, d) as the layer's attention sees them (rotated when
    positions are rotary), and the head's own output z (d,) at ``position`` of ``row``."""
    if getattr(model, "family", "") != "gpt":
        kind = getattr(model, "family", "") or type(model).__name__
        raise ConfigError(f"model.kind: the dual-model check needs attention (a GPT), not {kind}")
    _check_index("--layer", layer, model.cfg.n_layers)
    _check_index("--head", head, model.cfg.n_heads)
    _check_index("--row", row, inputs.shape[0])
    _check_index("--position", position, inputs.shape[1])
    prefix = f"blocks.{layer}.attn."
    names = [prefix + name for name in ("hook_q", "hook_k", "hook_v", "hook_z")]
    _, cache = model.run_with_cache(inputs[row : row + 1], names_filter=lambda n: n in names)
    # (1, L, heads, head_dim) -> (L, head_dim) of the one row and head
    q, k, v, z = (cache[name][0, :, head] for name in names)
    if model.cfg.positions == "rotary":  # the layer rotates q and k after their hooks
        attention = model.blocks[layer].attn
        q = apply_rotary(q, attention.rotary_cos, attention.rotary_sin)
        k = apply_rotary(k, attention.rotary_cos, attention.rotary_sin)
    return q[position], k[: position + 1], v[: position + 1], z[position]


def layer_inputs(
    model: Any, inputs: Tensor, layer: int, head: int, position: int, row: int = 0
) -> Case:
    """(q, K, V) of head ``head`` in block ``layer`` of a GPT run on ``inputs`` (batch, L) or
    (batch, L, input_dim): the query at ``position`` of ``row`` and the keys and values of
    positions 0..position (its own last), so that softmax_attention(q, K, V) is the head's
    output there (hook_z). A model without attention is a ConfigError naming model.kind."""
    q, K, V, _ = _head_tensors(model, inputs, layer, head, position, row)
    return q, K, V


def example_inputs(config: RunConfig, n: int) -> Tensor:
    """The first ``n`` inputs of the run's first probe (token ids or vectors): realistic inputs
    for its model."""
    from reasonlab.tasks import build_task

    return build_task(config.task).example_inputs(n)


# ------------------------------------------------------------------------------- the analysis


def plot_gaps(result: dict[str, Any], title: str, path: Path) -> None:
    """Two log-log panels against m: rf vs softmax with its fitted slope and an m^(-1/2) line
    through its first point; dual vs rf (rounding)."""
    import matplotlib.pyplot as plt

    from reasonlab.reporting.plots import TITLE_SIZE, save_png, wrap_title

    ms, errors, slope = result["ms"], result["rf_vs_softmax"], result["slope"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    left.loglog(ms, errors, "o-", label="||rf - softmax|| / ||softmax||")
    if slope is not None:
        x = torch.log(torch.tensor(ms, dtype=torch.float64))
        y = torch.log(torch.tensor(errors, dtype=torch.float64))
        intercept = float(y.mean() - slope * x.mean())
        fitted = [math.exp(intercept + slope * math.log(m)) for m in ms]
        left.loglog(ms, fitted, "-", alpha=0.6, label=f"fit: slope {slope:.3f}")
    reference = [errors[0] * (m / ms[0]) ** -0.5 for m in ms]
    left.loglog(ms, reference, "k--", alpha=0.5, label="m^(-1/2)")
    left.set_xlabel("random features m")
    left.set_title("random features vs softmax", fontsize=TITLE_SIZE)
    left.legend(fontsize=7)
    right.loglog(ms, [max(gap, 1e-300) for gap in result["dual_vs_rf"]], "o-", color="C3")
    right.set_xlabel("random features m")
    right.set_title("dual model (one step) vs random features: max |gap|", fontsize=TITLE_SIZE)
    for axis in (left, right):
        axis.grid(alpha=0.3, which="both")
    fig.suptitle(wrap_title(title, 8.0), fontsize=TITLE_SIZE)
    save_png(fig, path, rect=(0, 0, 1, 0.93))


def _write(result: dict[str, Any], folder: Path, title: str, stem: str = "dual") -> None:
    from reasonlab.core.files import make_dir, write_json

    make_dir(folder)
    write_json(folder / f"{stem}.json", result)
    plot_gaps(result, title, folder / f"{stem}.png")


def head_gaps(
    model: Any, inputs: Tensor, layer: int, head: int, ms: Sequence[int], seeds: int
) -> dict[str, Any]:
    """The gaps against m for head ``head`` of block ``layer`` of a GPT (in float64), for the
    query at the last position of every row of ``inputs`` and ``seeds`` omegas per query and
    m (``measure_gaps``); ``softmax_vs_layer`` is the largest gap between softmax_attention on
    the head's (q, K, V) and the head's own output (hook_z): rounding when the inputs are read
    right."""
    model = model.double()
    if inputs.is_floating_point():
        inputs = inputs.double()
    position = inputs.shape[1] - 1
    cases, layer_gaps = [], []
    for row in range(inputs.shape[0]):
        q, K, V, z = _head_tensors(model, inputs, layer, head, position, row)
        cases.append((q, K, V))
        layer_gaps.append(float((softmax_attention(q, K, V) - z).abs().max()))
    gaps = measure_gaps(cases, ms, seeds, torch.Generator().manual_seed(0))
    return {
        "layer": layer,
        "head": head,
        "variance_scale": variance_scale(cases),
        "queries": [[row, position] for row in range(len(cases))],
        "seeds": seeds,
        "softmax_vs_layer": max(layer_gaps),
        **gaps,
    }


def _check_grid(ms: Sequence[int], seeds: int) -> None:
    if not ms or min(ms) < 1:
        raise ConfigError(f"--m: expected positive numbers of features, got {list(ms)}")
    if seeds < 1:
        raise ConfigError(f"--seeds: expected at least 1, got {seeds}")


def run_dual(
    run_dir: str | Path | None = None,
    layer: int = 0,
    head: int = 0,
    ms: Sequence[int] = DEFAULT_MS,
    seeds: int = DEFAULT_SEEDS,
    checkpoint: str = "last",
    out: str | Path | None = None,
    rows: int = 4,
) -> dict[str, Any]:
    """The dual-model check. Without ``run_dir``: ``gap_curve`` on random inputs, written to
    OUT/analysis/dual.json and .png when ``out`` is given. With a GPT run: the head ``head`` of
    block ``layer`` at checkpoint ``checkpoint`` (last or a step), in float64, for the query at
    the last position of each of the first ``rows`` rows of the run's first probe, with
    ``seeds`` omegas per query and m; written to RUN_DIR/analysis/dual.json and .png.
    ``softmax_vs_layer`` is the largest gap between softmax_attention on the head's (q, K, V)
    and the head's own output (hook_z): rounding when the inputs are read right."""
    from reasonlab.analysis.run_folder import select_steps
    from reasonlab.runs.folder import RunDir

    ms = [int(m) for m in ms]
    _check_grid(ms, seeds)
    if run_dir is None:
        result = {"source": "random inputs", **gap_curve(ms, seeds), "note": NOTE}
        if out is not None:
            title = f"dual-model check on random inputs (d {result['dim']}, T {result['context']})"
            _write(result, Path(out) / "analysis", title)
        return result
    if out is not None:
        raise ConfigError("--out: only without RUN_DIR (a run's analysis goes to RUN_DIR/analysis)")
    if checkpoint == "all":
        raise ConfigError("--checkpoint: the dual check takes last or one step, not all")
    run = RunDir(run_dir)
    config = run.load_config()
    with run.lock():
        step = select_steps(run, checkpoint)[0]
        model = run.load_model(step, config).double()
        if getattr(model, "family", "") != "gpt":
            raise ConfigError(
                f"model.kind: the dual-model check needs attention (a GPT); "
                f"{run.config_path} has {config.model.kind}"
            )
        _check_index("--layer", layer, model.cfg.n_layers)
        _check_index("--head", head, model.cfg.n_heads)
        # The identity holds for any inputs, so the probe rows need not be the trained data
        # byte for byte: no fingerprint check.
        inputs = example_inputs(config, rows)
        gaps = head_gaps(model, inputs, layer, head, ms, seeds)
        result = {"source": "run", "run": str(run.path), "step": step, **gaps, "note": NOTE}
        title = f"{run.path.name}: dual-model check, layer {layer} head {head}, step {step}"
        _write(result, run.path / "analysis", title, f"dual-layer{layer}-head{head}")
    return result
