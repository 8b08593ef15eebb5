"""Behaviour checks of scoring and the summary that no other test pinned down (issue 21, items
16, 17, 19): a lower-is-better metric that hits the threshold exactly has reached it, and the
in-context error of a known prediction is the number computed by hand, divided by the probe's
normalizer, in fp32 and under bf16 autocast (the models here compute exactly in bf16: small
integers and zeros)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from reasonlab.config import ICLTaskConfig
from reasonlab.tasks.base import RegressionProbe
from reasonlab.tasks.icl import ICLTask
from reasonlab.training.evaluation import evaluate, regression_errors
from reasonlab.training.loop import History

PRECISIONS = pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])

# ----------------------------------------------------------------------------- summary


def records(**series: list[float]) -> list[dict]:
    steps = range(0, 10 * len(next(iter(series.values()))), 10)
    return [
        {"step": step, "loss": 1.0, **{k: v[i] for k, v in series.items()}}
        for i, step in enumerate(steps)
    ]


def test_an_error_exactly_at_the_threshold_has_reached_it():
    """Lower is better: reached at or below the threshold, so an error equal to it counts."""
    history = History(records(err=[0.9, 0.25, 0.1], never=[0.9, 0.8, 0.26]))
    summary = history.summary(0.25, higher_is_better=False)
    assert summary["steps_to_threshold"] == {"err": 10, "never": None}
    assert summary["best"] == {"err": 0.1, "never": 0.26}
    assert summary["final"] == {"err": 0.1, "never": 0.26}


def test_an_accuracy_exactly_at_the_threshold_has_reached_it():
    """Higher is better: the mirror case, at or above."""
    history = History(records(acc=[0.1, 0.95, 0.99], never=[0.1, 0.94, 0.5]))
    summary = history.summary(0.95, higher_is_better=True)
    assert summary["steps_to_threshold"] == {"acc": 10, "never": None}


def test_the_threshold_is_the_same_value_in_both_directions():
    """One series, its middle value as threshold: reached there both ways (the series goes
    down, so an error reaches it at step 10 and an accuracy at step 0)."""
    history = History(records(x=[0.75, 0.5, 0.25]))
    lower = history.summary(0.5, higher_is_better=False)["steps_to_threshold"]
    higher = history.summary(0.5, higher_is_better=True)["steps_to_threshold"]
    assert (lower, higher) == ({"x": 10}, {"x": 0})


# ----------------------------------------------------------------------------- ICL errors


class ReadCoordinate(nn.Module):
    """Predicts coordinate ``index`` of each input vector plus ``shift``: a linear read-out with
    weights 0 or 1, exact in bf16 on small integers."""

    def __init__(self, width: int, index: int, shift: float = 0.0):
        super().__init__()
        self.read = nn.Linear(width, 1)
        with torch.no_grad():
            self.read.weight.zero_()
            self.read.weight[0, index] = 1.0
            self.read.bias.fill_(shift)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.read(inputs)


def hand_probe() -> RegressionProbe:
    """Two prompts of three query positions (0, 2, 4) over vectors of width 2; coordinate 0 at
    the query positions holds 1, 2, 3 and 3, 1, 0; targets 2, 2, 2 and 1, 1, 1; normalizer 4."""
    inputs = torch.zeros(2, 6, 2)
    inputs[0, 0::2, 0] = torch.tensor([1.0, 2.0, 3.0])
    inputs[1, 0::2, 0] = torch.tensor([3.0, 1.0, 0.0])
    inputs[:, 1::2, 1] = 7.0  # the y slots: never read by the positions scored
    targets = torch.tensor([[2.0, 2.0, 2.0], [1.0, 1.0, 1.0]])[..., None]
    return RegressionProbe(inputs, targets, torch.arange(0, 6, 2), normalizer=4.0, report_at=[0, 2])


@PRECISIONS
def test_the_error_of_a_known_prediction_is_computed_by_hand(bf16):
    """Predictions 1, 2, 3 and 3, 1, 0 against 2 and 1: squared errors 1, 0, 1 and 4, 0, 1;
    means per position 2.5, 0, 1; divided by the normalizer 4: 0.625, 0, 0.25."""
    model, probe = ReadCoordinate(2, 0), hand_probe()
    errors = regression_errors(model, probe, batch_size=1, autocast=bf16)
    assert errors.tolist() == pytest.approx([0.625, 0.0, 0.25], abs=1e-6)
    scores = evaluate(model, {"icl": probe}, batch_size=2, autocast=bf16)
    assert scores == pytest.approx({"icl": 0.875 / 3, "icl.k0": 0.625, "icl.k2": 0.25}, abs=1e-6)


@PRECISIONS
def test_the_error_scales_inversely_with_the_normalizer(bf16):
    """The same prediction against a probe with twice the normalizer scores half."""
    model, probe = ReadCoordinate(2, 0, shift=1.0), hand_probe()
    twice = RegressionProbe(probe.inputs, probe.targets, probe.positions, 8.0, probe.report_at)
    # predictions 2, 3, 4 and 4, 2, 1: squared errors 0, 1, 4 and 9, 1, 0 -> 4.5, 1, 2 per position
    assert regression_errors(model, probe, autocast=bf16).tolist() == pytest.approx(
        [4.5 / 4, 1 / 4, 2 / 4], abs=1e-6
    )
    assert regression_errors(model, twice, autocast=bf16).tolist() == pytest.approx(
        [4.5 / 8, 1 / 8, 2 / 8], abs=1e-6
    )


@PRECISIONS
@pytest.mark.parametrize(
    "function_class, extra",
    [("linear", {}), ("sparse_linear", {"sparsity": 2}), ("noisy_linear", {"noise_std": 2.0})],
)
def test_predicting_zero_on_the_task_probe_scores_about_one(bf16, function_class, extra):
    """A model that predicts 0 scores E[f(x)^2] / normalizer ~ 1 on the task's own probe. With
    2000 prompts the standard error of a position's mean is below 0.04 (0.02 for the mean over
    the 4 positions): tolerances of five standard errors."""
    cfg = ICLTaskConfig(
        function_class=function_class, dim=8, n_points=4, num_test=2000, seed=3, **extra
    )
    probe = ICLTask(cfg).probes["test"]
    zero = ReadCoordinate(cfg.dim + 1, 0)
    with torch.no_grad():
        zero.read.weight.zero_()
    errors = regression_errors(zero, probe, batch_size=500, autocast=bf16)
    assert errors.tolist() == pytest.approx([1.0] * cfg.n_points, abs=0.2)
    assert evaluate(zero, {"test": probe}, 500, autocast=bf16)["test"] == pytest.approx(1, abs=0.1)
