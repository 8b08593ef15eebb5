"""The check that stops (or skips) a training step whose loss or gradients are not finite."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reasonlab.core.errors import RunFailed
from reasonlab.training.state import Training


def gradient_norm(model: nn.Module, clip: float) -> Tensor:
    """The gradients' total norm; with ``clip`` > 0 they are clipped to it as well."""
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def check_finite(loss: Tensor, norm: Tensor) -> tuple[float, bool]:
    """The loss as a float and whether it and the gradient norm are finite, in one device sync
    (the loss is read every step anyway)."""
    loss_value, norm_value = torch.stack([loss.detach().float(), norm.detach().float()]).tolist()
    return loss_value, math.isfinite(loss_value) and math.isfinite(norm_value)


def nonfinite_failure(state: Training, step: int, loss_value: float) -> RunFailed:
    """The one-line failure of a run stopped at ``step`` by a non-finite loss or gradient."""
    finite_loss = math.isfinite(loss_value)
    what = "the gradient norm is not finite" if finite_loss else f"the loss is {loss_value}"
    kept = state.checkpoints.latest or (state.run.checkpoint_steps() or [None])[-1]
    where = f"checkpoint of step {kept} kept" if kept else "no checkpoint kept"
    return RunFailed(
        f"{state.run.path}: stopped at step {step}: {what} (train.on_nonfinite: stop); {where}; "
        "lower train.lr, set train.grad_clip, or use train.on_nonfinite: skip_step",
        step=step,
    )
