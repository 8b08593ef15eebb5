"""AdamW and gradient clipping over stacked parameters (a leading member dimension K), with
hyperparameters per member, for packed training (``training/pack.py``).

The update is torch.optim.AdamW's (decoupled weight decay, bias corrections, eps added to the
corrected square root), written with tensors of shape (K,) broadcast over each parameter, so that
every member keeps its own learning rate, weight decay and step count. A member that is not active
in a step (a skipped non-finite step, a failed member) is left exactly as it was: its gradient is
replaced by zeros and its learning rate, moment weights and step increment are zero.

The state converts to and from torch AdamW's own (``export_member``, ``import_member``), so a
member's checkpoint holds the optimizer state in the layout an unpacked run writes and reads.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _per_member(values: Tensor, like: Tensor) -> Tensor:
    """(K,) values shaped (K, 1, ..., 1) to broadcast over a stacked parameter."""
    return values.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def decays(parameter: nn.Parameter) -> bool:
    """The no-decay rule of ``loop.make_optimizer``: no decay on norms, biases and what a family
    marks (``_no_weight_decay``)."""
    return parameter.dim() >= 2 and not getattr(parameter, "_no_weight_decay", False)


class StackedAdamW:
    """AdamW over ``params`` (name -> (K, ...) leaf tensor); ``decay`` names the parameters that
    get weight decay (the others none, as ``make_optimizer``'s no-decay group)."""

    def __init__(
        self,
        params: dict[str, Tensor],
        decay: set[str],
        weight_decay: Tensor,
        betas: tuple[float, float],
        eps: float = 1e-8,
    ) -> None:
        self.params, self.decay = params, decay
        self.weight_decay = weight_decay  # (K,)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        members = weight_decay.shape[0]
        # steps taken, per parameter and member (torch keeps one per parameter)
        self.steps = {n: torch.zeros(members, dtype=torch.float32) for n in params}

    @torch.no_grad()
    def step(self, lr: Tensor, active: Tensor) -> None:
        """One update with learning rates ``lr`` (K,) for the ``active`` (K,) bool members."""
        act = active.to(torch.float32)
        for name, param in self.params.items():
            grad = param.grad
            if grad is None:  # torch skips a parameter without a gradient
                continue
            a = _per_member(active, param).bool()
            grad = torch.where(a, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
            steps = self.steps[name] = self.steps[name] + act
            counted = steps.clamp(min=1.0).double()
            bc1 = (1 - self.beta1**counted).to(torch.float32)
            bc2_sqrt = (1 - self.beta2**counted).sqrt().to(torch.float32)
            lr_now = lr.to(torch.float32) * act
            if name in self.decay:
                param.mul_(_per_member(1 - lr_now * self.weight_decay, param))
            exp_avg, exp_avg_sq = self.exp_avg[name], self.exp_avg_sq[name]
            exp_avg.lerp_(grad, _per_member((1 - self.beta1) * act, param))
            keep = torch.where(active, torch.tensor(self.beta2), torch.tensor(1.0))
            exp_avg_sq.mul_(_per_member(keep, param))
            exp_avg_sq.add_(grad * grad * _per_member((1 - self.beta2) * act, param))
            denom = (exp_avg_sq.sqrt() / _per_member(bc2_sqrt, param)).add_(self.eps)
            param.sub_(exp_avg / denom * _per_member(lr_now / bc1, param))

    def export_member(self, k: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Member ``k``'s state written into the torch AdamW ``optimizer`` of its own ``model``
        (its ``pack_state`` then holds the unpacked layout); a parameter never stepped has no
        state, as in torch."""
        optimizer.state.clear()
        for name, param in model.named_parameters():
            step = float(self.steps[name][k])
            if step == 0:
                continue
            optimizer.state[param] = {
                "step": torch.tensor(step, dtype=torch.float32),
                "exp_avg": self.exp_avg[name][k].detach().clone(),
                "exp_avg_sq": self.exp_avg_sq[name][k].detach().clone(),
            }

    @torch.no_grad()
    def import_member(self, k: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Member ``k``'s state read from the torch AdamW ``optimizer`` of its ``model`` (what a
        resume restored from its checkpoint)."""
        for name, param in model.named_parameters():
            state = optimizer.state.get(param)
            if not state:
                continue
            self.steps[name][k] = float(state["step"])
            self.exp_avg[name][k].copy_(state["exp_avg"])
            self.exp_avg_sq[name][k].copy_(state["exp_avg_sq"])


def member_grad_norms(params: dict[str, Tensor], clip: float) -> Tensor:
    """Each member's total gradient norm (K,), as ``clip_grad_norm_`` computes it on its own
    parameters; with ``clip`` > 0 each member's gradients are clipped to it as well."""
    grads = [p.grad for p in params.values() if p.grad is not None]
    if not grads:
        return torch.zeros(next(iter(params.values())).shape[0])
    squares = [g.detach().float().pow(2).flatten(1).sum(1) for g in grads]
    norms = torch.stack(squares).sum(0).sqrt()
    if clip > 0:
        coef = (clip / (norms + 1e-6)).clamp(max=1.0)
        coef = torch.where(torch.isfinite(coef), coef, torch.ones_like(coef))
        for grad in grads:
            grad.mul_(_per_member(coef, grad))
    return norms


def check_members(losses: Tensor, norms: Tensor) -> tuple[list[float], list[bool]]:
    """Each member's loss as a float and whether its loss and gradient norm are finite, in one
    device sync."""
    values = torch.stack([losses.detach().float(), norms.detach().float().to(losses.device)])
    loss_values, norm_values = values.tolist()
    pairs = zip(loss_values, norm_values, strict=True)
    finite = [math.isfinite(a) and math.isfinite(b) for a, b in pairs]
    return loss_values, finite
