"""Softmax attention for one query as one gradient step of a dual linear model (arXiv
2310.13220), checked numerically.

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
error (Monte Carlo), with the least-squares log-log slope of the latter, on random inputs;
``measure_gaps`` does it on any (q, K, V), and dual_check.py on a trained GPT's head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

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
