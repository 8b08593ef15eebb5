"""In-context regression: a trained model's error against the number of in-context examples,
beside baselines computed on the same prompts (Garg et al. 2022, arXiv 2208.01066).

For the target after k examples (k = 0 .. n - 1) each baseline sees the k pairs before it and
predicts from x_{k+1}; with no examples every baseline predicts 0. Errors are squared errors
divided by the probe's normalizer (E[f(x)^2] of the function class: d for linear regression).

- ``least_squares``: the minimum-norm least-squares fit (the pseudo-inverse, exact for k < d too);
- ``ridge``: (X^T X + alpha I)^-1 X^T y;
- ``knn``: the mean of the targets of the 3 nearest examples (fewer while k < 3);
- ``averaging``: w = (1/k) sum_i y_i x_i (Garg et al.'s averaging estimator);
- ``gd_step``: one gradient step from w = 0 on the squared loss (1/2k) sum_i (w.x_i - y_i)^2 with
  step size k / (k + d + 1), the size that minimizes the expected error for x ~ N(0, I_d) and
  noiseless linear targets (E||eta (1/k) X^T X w - w||^2 = eta^2 (1 + (d+1)/k) - 2 eta + 1); the
  averaging estimator is the same step with size 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from reasonlab.tasks.base import RegressionProbe
from reasonlab.training.evaluation import regression_errors

BASELINES = ("least_squares", "ridge", "knn", "averaging", "gd_step")
RIDGE_ALPHA = 0.1
NEIGHBOURS = 3


def split_prompts(probe: RegressionProbe) -> tuple[Tensor, Tensor]:
    """The probe's xs (N, n, d) and ys (N, n), read back from its interleaved inputs."""
    width = probe.inputs.shape[-1] - 1
    return probe.inputs[:, 0::2, :width].double(), probe.inputs[:, 1::2, width].double()


def _least_squares(X: Tensor, y: Tensor, x: Tensor) -> Tensor:
    w = torch.linalg.pinv(X) @ y[..., None]
    return (x[:, None] @ w)[:, 0, 0]


def _ridge(X: Tensor, y: Tensor, x: Tensor) -> Tensor:
    eye = torch.eye(X.shape[-1], dtype=X.dtype)
    w = torch.linalg.solve(
        X.transpose(1, 2) @ X + RIDGE_ALPHA * eye, X.transpose(1, 2) @ y[..., None]
    )
    return (x[:, None] @ w)[:, 0, 0]


def _knn(X: Tensor, y: Tensor, x: Tensor) -> Tensor:
    distances = (X - x[:, None]).pow(2).sum(-1)  # (N, k)
    nearest = distances.topk(min(NEIGHBOURS, X.shape[1]), largest=False).indices
    return y.gather(1, nearest).mean(1)


def _averaging(X: Tensor, y: Tensor, x: Tensor) -> Tensor:
    w = (y[..., None] * X).mean(1)
    return (w * x).sum(-1)


def _gd_step(X: Tensor, y: Tensor, x: Tensor) -> Tensor:
    k, d = X.shape[1], X.shape[2]
    return k / (k + d + 1) * _averaging(X, y, x)


PREDICTORS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "least_squares": _least_squares,
    "ridge": _ridge,
    "knn": _knn,
    "averaging": _averaging,
    "gd_step": _gd_step,
}


def baseline_errors(
    probe: RegressionProbe, names: tuple[str, ...] = BASELINES
) -> dict[str, list[float]]:
    """Baseline name -> normalized squared error after k = 0 .. n - 1 examples, on the probe's
    own prompts."""
    xs, ys = split_prompts(probe)
    curves: dict[str, list[float]] = {}
    for name in names:
        predict = PREDICTORS[name]
        errors = []
        for k in range(xs.shape[1]):
            if k == 0:
                predicted = torch.zeros_like(ys[:, 0])
            else:
                predicted = predict(xs[:, :k], ys[:, :k], xs[:, k])
            errors.append(float((predicted - ys[:, k]).pow(2).mean()) / probe.normalizer)
        curves[name] = errors
    return curves


def error_curves(
    model: nn.Module, probe: RegressionProbe, batch_size: int = 1000, autocast: bool = False
) -> dict[str, list[float]]:
    """{"model": ..., baseline: ...}: normalized error after k = 0 .. n - 1 examples; the model
    under bf16 autocast when ``autocast`` (as a bf16 run scored itself), the baselines in fp32."""
    model.eval()
    errors = regression_errors(model, probe, batch_size, autocast=autocast)
    curves = {"model": [float(e) for e in errors]}
    return curves | baseline_errors(probe)
