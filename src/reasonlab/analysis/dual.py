"""Softmax attention for one query as one gradient step of a dual linear model (arXiv
2310.13220, REFERENCES.md section 3), checked numerically.

Tokens 1..T are demonstrations and token T+1 is the query itself; one head gives keys k_i,
values v_i (i = 1..T+1) and the query q, of width d. Exact softmax attention is

    softmax(q, K, V) = sum_i a_i v_i,    a_i = exp(q.k_i / sqrt d) / sum_j exp(q.k_j / sqrt d).

Positive random features phi(x) = m^(-1/2) [exp(w_j . x - |x|^2 / 2)]_{j=1..m}, w_j ~ N(0, I),
satisfy E phi(x).phi(y) = exp(x.y). With q' = d^(-1/4) q and k'_i = d^(-1/4) k_i (so that
exp(q'.k'_i) = exp(q.k_i / sqrt d)), the random-feature estimate of attention is

    rf(q, K, V) = sum_i v_i phi(k'_i).phi(q') / D,    D = sum_i phi(k'_i).phi(q'),

which tends to softmax(q, K, V) like m^(-1/2) (the Monte Carlo rate).

The dual model f(x) = W x (W: d_v x m) sees the pairs (phi(k'_i), v_i). It starts from
W_0 = u_{T+1} phi(k'_{T+1})^T / D and takes one gradient step W_1 = W_0 - eta grad L(W_0) on

    L(W) = -(1 / (eta D)) sum_{i <= T} u_i . W phi(k'_i) + (reg / 2) ||W||_F^2,

with targets u_i = v_i - beta vbar_{-i} (vbar_{-i}: the mean of the other T values among all
T+1; 0 when T = 0). Then W_1 = (1 - eta reg) W_0 + sum_{i <= T} u_i phi(k'_i)^T / D, so

    W_1 phi(q') = (1 - eta reg) w_{T+1} u_{T+1} + sum_{i <= T} w_i u_i,
    w_i = phi(k'_i).phi(q') / D.

Without reg and beta this is rf(q, K, V) exactly, whatever eta. The two variants correspond to
attention with exact weights a_i in place of w_i:

- a norm regularizer scales the query's own term: ``regularized_attention`` with
  self_weight = 1 - eta reg;
- negative samples subtract beta times the mean of the other values: ``negative_attention``,
  sum_i a_i (v_i - beta vbar_{-i}) = sum_j (a_j - beta (1 - a_j) / T) v_j.

Both take ``omega``: None for the exact softmax weights a_i, random-feature directions for the
estimated weights w_i (the counterpart the dual model equals to rounding). Taking the T
examples one step each (``dual_model_prediction_steps``) gives the same W_1 without reg; with
reg, W_0 is decayed by (1 - eta reg)^T and example i by (1 - eta reg)^(T - i).

``gap_curve`` measures, against m, the dual-vs-rf gap (rounding) and the rf-vs-softmax relative
error (Monte Carlo), with the least-squares log-log slope of the latter; ``run_dual`` does the
same on a trained GPT's head through ``layer_inputs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reasonlab.config import ConfigError, RunConfig
from reasonlab.models.attention import apply_rotary

DEFAULT_MS = (16, 64, 256, 1024, 4096)
DEFAULT_SEEDS = 32
# Random inputs are N(0, 1) * INPUT_SCALE. One feature's estimate of exp(q'.k') has relative
# variance exp(|q' + k'|^2) - 1, about exp(2 sqrt(d) s^2) - 1 at scale s: ~290 at d = 8 and
# s = 1, where m^(-1/2) would only show at m far beyond the default grid (the fitted slope is
# near -0.2 there; -0.42 at s = 0.5). At s = 0.3 it is ~0.7, and the slope over m = 16..4096
# is -0.5 +- 0.04 (seeds 0..19 of the default check).
INPUT_SCALE = 0.3
NOTE = (
    "per m, means over queries x seeds (a fresh omega each) of max |dual - rf| and "
    "||rf - softmax|| / ||softmax|| (reasonlab.analysis.dual); slope: least squares of "
    "log(rf_vs_softmax) against log(m), -0.5 at the Monte Carlo rate"
)


# --------------------------------------------------------------------------- attention weights


def softmax_weights(q: Tensor, K: Tensor) -> Tensor:
    """Exact attention weights a (T+1,) of the query q (d,) over the keys K (T+1, d)."""
    return torch.softmax(K @ q / math.sqrt(q.shape[-1]), dim=0)


def _log_features(x: Tensor, omega: Tensor) -> Tensor:
    """log(m^(1/2) phi(x)) = w_j . x - |x|^2 / 2: x (..., d), omega (m, d) -> (..., m)."""
    return x @ omega.T - 0.5 * (x * x).sum(-1, keepdim=True)


def positive_features(x: Tensor, omega: Tensor) -> Tensor:
    """phi(x) = m^(-1/2) [exp(w_j . x - |x|^2 / 2)]_j: x (..., d), omega (m, d) -> (..., m)."""
    return torch.exp(_log_features(x, omega)) / math.sqrt(omega.shape[0])


def _scaled_features(q: Tensor, K: Tensor, omega: Tensor) -> tuple[Tensor, Tensor]:
    """phi(q') (m,) and phi(k'_i) (T+1, m) with q', k' scaled by d^(-1/4), each side divided by
    one common factor (its largest feature) so that large queries or keys neither overflow nor
    underflow: every quantity here (w_i, the dual's W_1 phi(q')) is a ratio in which a common
    factor of the key features, or of the query features, cancels."""
    scale = q.shape[-1] ** -0.25
    log_query, log_keys = _log_features(q * scale, omega), _log_features(K * scale, omega)
    return torch.exp(log_query - log_query.max()), torch.exp(log_keys - log_keys.max())


def random_feature_weights(q: Tensor, K: Tensor, omega: Tensor) -> Tensor:
    """w_i = phi(k'_i).phi(q') / D (T+1,), the random-feature estimate of the softmax weights."""
    query_features, key_features = _scaled_features(q, K, omega)
    scores = key_features @ query_features
    return scores / scores.sum()


def attention_weights(q: Tensor, K: Tensor, omega: Tensor | None = None) -> Tensor:
    """Exact softmax weights (omega None) or their random-feature estimate."""
    return softmax_weights(q, K) if omega is None else random_feature_weights(q, K, omega)


# ------------------------------------------------------------------ attention and its variants


def softmax_attention(q: Tensor, K: Tensor, V: Tensor) -> Tensor:
    """Exact softmax attention of q (d,) over K (T+1, d), V (T+1, d_v) -> (d_v,)."""
    return softmax_weights(q, K) @ V


def random_feature_attention(q: Tensor, K: Tensor, V: Tensor, omega: Tensor) -> Tensor:
    """sum_i v_i phi(k'_i).phi(q') / D with omega (m, d) -> (d_v,)."""
    return random_feature_weights(q, K, omega) @ V


def regularized_attention(
    q: Tensor, K: Tensor, V: Tensor, self_weight: float, omega: Tensor | None = None
) -> Tensor:
    """sum_{i <= T} a_i v_i + self_weight a_{T+1} v_{T+1}: the query's own term scaled (the
    weights are not renormalized). omega None: exact weights; else random-feature weights."""
    weights = attention_weights(q, K, omega).clone()
    weights[-1] = weights[-1] * self_weight
    return weights @ V


def other_values_mean(V: Tensor) -> Tensor:
    """vbar_{-i} (T+1, d_v): row i is the mean of the other T rows of V (zeros when T = 0)."""
    others = V.shape[0] - 1
    if others == 0:
        return torch.zeros_like(V)
    return (V.sum(0, keepdim=True) - V) / others


def negative_attention(
    q: Tensor, K: Tensor, V: Tensor, beta: float, omega: Tensor | None = None
) -> Tensor:
    """sum_i a_i (v_i - beta vbar_{-i}) over all T+1 tokens: each value contrasted with the mean
    of the others. omega None: exact weights; else random-feature weights."""
    return attention_weights(q, K, omega) @ (V - beta * other_values_mean(V))


# -------------------------------------------------------------------------------- the dual model


def _gradient_step(W: Tensor, loss: Callable[[Tensor], Tensor], eta: float) -> Tensor:
    """W - eta grad loss(W), the gradient taken by autograd (also inside torch.no_grad)."""
    with torch.enable_grad():
        leaf = W.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(loss(leaf), leaf)
    return W.detach() - eta * gradient


def _dual_setup(
    q: Tensor, K: Tensor, V: Tensor, omega: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """phi(q') (m,), phi(k'_i) (T+1, m), targets u_i (T+1, d_v), D, and W_0 (d_v, m)."""
    query_features, key_features = _scaled_features(q, K, omega)
    normalizer = (key_features @ query_features).sum()
    targets = V - beta * other_values_mean(V)
    W_0 = torch.outer(targets[-1], key_features[-1]) / normalizer
    return query_features, key_features, targets, normalizer, W_0


def _dual_loss(
    features: Tensor, targets: Tensor, normalizer: Tensor, eta: float, reg: float
) -> Callable[[Tensor], Tensor]:
    """L(W) = -(1 / (eta D)) sum_i u_i . W phi_i + (reg / 2) ||W||_F^2 over the given rows."""

    def loss(W: Tensor) -> Tensor:
        fit = (targets * (features @ W.T)).sum() / (eta * normalizer)
        return -fit + 0.5 * reg * (W * W).sum()

    return loss


def dual_model_prediction(
    q: Tensor,
    K: Tensor,
    V: Tensor,
    omega: Tensor,
    eta: float = 1.0,
    reg: float = 0.0,
    negative_beta: float = 0.0,
) -> Tensor:
    """W_1 phi(q') (d_v,) after one gradient step of the dual model on the T demonstrations,
    from W_0 = u_{T+1} phi(k'_{T+1})^T / D (module docstring)."""
    query_features, key_features, targets, normalizer, W_0 = _dual_setup(
        q, K, V, omega, negative_beta
    )
    loss = _dual_loss(key_features[:-1], targets[:-1], normalizer, eta, reg)
    return _gradient_step(W_0, loss, eta) @ query_features


def dual_model_prediction_steps(
    q: Tensor, K: Tensor, V: Tensor, omega: Tensor, eta: float = 1.0, reg: float = 0.0
) -> Tensor:
    """W_T phi(q') after T single-example steps (example i's loss term alone, i = 1..T in order)
    from the same W_0: the one-step result without reg; with reg, W_0 decays by
    (1 - eta reg)^T and example i by (1 - eta reg)^(T - i)."""
    query_features, key_features, targets, normalizer, W = _dual_setup(q, K, V, omega, 0.0)
    for i in range(K.shape[0] - 1):
        loss = _dual_loss(key_features[i : i + 1], targets[i : i + 1], normalizer, eta, reg)
        W = _gradient_step(W, loss, eta)
    return W @ query_features


# ------------------------------------------------------------------------------ gaps against m


Case = tuple[Tensor, Tensor, Tensor]  # q (d,), K (T+1, d), V (T+1, d_v)


def loglog_slope(ms: Sequence[int], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) against log(m); None with fewer than two points."""
    if len(set(ms)) < 2:
        return None
    x = torch.log(torch.tensor(ms, dtype=torch.float64))
    y = torch.log(torch.tensor(values, dtype=torch.float64))
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def measure_gaps(
    cases: Sequence[Case], ms: Sequence[int], draws: int, generator: torch.Generator
) -> dict[str, Any]:
    """For each m, over every case x ``draws`` fresh omegas (m, d) ~ N(0, I): the mean of
    max |dual - rf| and the mean of ||rf - softmax|| / ||softmax||, and the latter's slope."""
    dual_vs_rf, rf_vs_softmax = [], []
    for m in ms:
        dual_gaps, relative_errors = [], []
        for q, K, V in cases:
            exact = softmax_attention(q, K, V)
            for _ in range(draws):
                omega = torch.randn(m, q.shape[-1], generator=generator, dtype=q.dtype)
                estimate = random_feature_attention(q, K, V, omega)
                dual = dual_model_prediction(q, K, V, omega)
                dual_gaps.append(float((dual - estimate).abs().max()))
                relative_errors.append(float((estimate - exact).norm() / exact.norm()))
        dual_vs_rf.append(sum(dual_gaps) / len(dual_gaps))
        rf_vs_softmax.append(sum(relative_errors) / len(relative_errors))
    return {
        "ms": list(ms),
        "dual_vs_rf": dual_vs_rf,
        "rf_vs_softmax": rf_vs_softmax,
        "slope": loglog_slope(ms, rf_vs_softmax),
    }


def gap_curve(
    ms: Sequence[int] = DEFAULT_MS,
    seeds: int = DEFAULT_SEEDS,
    dim: int = 8,
    context: int = 16,
    dtype: torch.dtype = torch.float64,
    input_scale: float = INPUT_SCALE,
    seed: int = 0,
) -> dict[str, Any]:
    """The gaps against m on random inputs: per seed a query q (dim,), keys and values
    (context + 1, dim) with entries N(0, 1) * input_scale (see INPUT_SCALE), and a fresh omega
    per m; means over the seeds (``measure_gaps``)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype) * input_scale

    cases = [(draw(dim), draw(context + 1, dim), draw(context + 1, dim)) for _ in range(seeds)]
    result = measure_gaps(cases, ms, 1, generator)
    settings = {"dim": dim, "context": context, "input_scale": input_scale, "seeds": seeds}
    return {**settings, "seed": seed, "dtype": str(dtype).removeprefix("torch."), **result}


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
    import matplotlib

    matplotlib.use("Agg")
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
    from reasonlab.core.files import make_dir
    from reasonlab.runs.folder import write_json

    make_dir(folder)
    write_json(folder / f"{stem}.json", result)
    plot_gaps(result, title, folder / f"{stem}.png")


def variance_scale(cases: Sequence[Case]) -> float:
    """The median over queries of max_i exp(|q' + k'_i|^2) - 1 (q' = d^(-1/4) q, k' likewise):
    one positive random feature's relative variance for the query's largest term,
    Var[phi(q').phi(k')] / E[...]^2 = exp(|q' + k'|^2) - 1 per feature. The m^(-1/2) rate of
    the random-feature gap shows once m is well above it; below, the gap falls more slowly."""
    scales = []
    for q, K, _ in cases:
        scale = q.shape[-1] ** -0.25
        largest = float(((q + K) * scale).pow(2).sum(-1).max())
        scales.append(math.expm1(min(largest, 700.0)))
    return float(torch.tensor(scales, dtype=torch.float64).median())


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
    from reasonlab.analysis.runs import select_steps
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
