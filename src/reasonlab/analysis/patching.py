"""Causal tracing / activation patching over a layer x position grid.

For clean queries and counterfactual queries that differ in one token, the activation at one hook
(residual stream by default, or a per-layer component: attention / MLP output for the GPT,
the mixer output for Mamba) of one layer and one position is replaced
by its counterfactual value, the rest of the network is rerun, and the clean target's rank,
probability and logit difference (clean target minus counterfactual target) are read at one
position. A large drop means that layer x position carries the information that was changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reasonlab.analysis.logit_lens import ranks_of
from reasonlab.models.base import LanguageModel


def hook_kinds(model: LanguageModel) -> list[str]:
    """``resid`` and the model family's per-layer components (attn_out, mlp_out; mixer_out)."""
    return ["resid", *model.component_hooks()]


def hook_rows(model: LanguageModel, hook: str) -> list[str]:
    """Hook names of the grid's rows: for ``resid`` the embeddings and every block's output
    (as in the logit lens), for a component kind every block's output of that kind."""
    if hook == "resid":
        return model.residual_names()
    components = model.component_hooks()
    if hook in components:
        return components[hook]
    raise ValueError(f"unknown hook kind {hook!r} (known: {', '.join(hook_kinds(model))})")


@dataclass
class PatchResult:
    """Grids are (layers, positions), averaged over queries; ``clean_*`` are the unpatched
    values and ``corrupt_*`` those of the counterfactual run, both at the read position."""

    hook: str
    read_position: int
    layers: list[str]  # hook name of each row
    rank: Tensor  # (layers, L) mean rank of the clean target after patching
    prob: Tensor  # (layers, L) mean probability of the clean target
    logit_diff: Tensor  # (layers, L) mean logit(clean target) - logit(counterfactual target)
    top1: Tensor  # (layers, L) share of queries still answering the clean target
    clean_rank: float
    clean_top1: float
    corrupt_top1: float


def _read(logits: Tensor, position: int, clean_target: Tensor, corrupt_target: Tensor):
    at = logits[:, position].float()
    rank = ranks_of(at, clean_target)
    prob = at.softmax(-1).gather(-1, clean_target[:, None])[:, 0]
    diff = at.gather(-1, clean_target[:, None])[:, 0] - at.gather(-1, corrupt_target[:, None])[:, 0]
    return rank, prob, diff


@torch.no_grad()
def patch_grid(
    model: LanguageModel,
    clean: Tensor,
    corrupt: Tensor,
    clean_target: Tensor,
    corrupt_target: Tensor,
    read_position: int,
    hook: str = "resid",
    positions: list[int] | None = None,
) -> PatchResult:
    """clean, corrupt: (N, L) token ids of equal shape; targets: (N,) token ids; the prediction
    for the target is read at ``read_position`` (the position whose next token is the target)."""
    if clean.shape != corrupt.shape:
        raise ValueError("clean and counterfactual queries must have the same shape")
    names = hook_rows(model, hook)
    was_training = model.training
    model.eval()
    positions = list(range(read_position + 1)) if positions is None else positions
    try:
        clean_logits = model(clean)
        corrupt_logits, cache = model.run_with_cache(corrupt, names_filter=names)
        clean_rank, _, _ = _read(clean_logits, read_position, clean_target, corrupt_target)
        corrupt_rank, _, _ = _read(corrupt_logits, read_position, clean_target, corrupt_target)
        shape = (len(names), clean.shape[1])
        grids = {key: torch.full(shape, float("nan")) for key in ("rank", "prob", "diff", "top1")}
        for layer, name in enumerate(names):
            for position in positions:

                def patch(activation: Tensor, _hook, name=name, position=position) -> Tensor:
                    patched = activation.clone()
                    patched[:, position] = cache[name][:, position]
                    return patched

                logits = model.run_with_hooks(clean, [(name, patch)])
                rank, prob, diff = _read(logits, read_position, clean_target, corrupt_target)
                grids["rank"][layer, position] = rank.float().mean()
                grids["prob"][layer, position] = prob.mean()
                grids["diff"][layer, position] = diff.mean()
                grids["top1"][layer, position] = (rank == 0).float().mean()
    finally:
        model.train(was_training)
    return PatchResult(
        hook=hook,
        layers=names,
        read_position=read_position,
        rank=grids["rank"],
        prob=grids["prob"],
        logit_diff=grids["diff"],
        top1=grids["top1"],
        clean_rank=float(clean_rank.float().mean()),
        clean_top1=float((clean_rank == 0).float().mean()),
        corrupt_top1=float((corrupt_rank == 0).float().mean()),
    )
