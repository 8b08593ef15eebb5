"""The training pieces that decide what is learned: AdamW's parameter groups (weight decay on
matrices and embeddings only) and the completion loss (which positions' cross-entropy counts)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers import tiny_config, tiny_task
from reasonlab.config import GPTModelConfig, MambaModelConfig, TrainConfig
from reasonlab.models.build import build_model
from reasonlab.tasks import build_task
from reasonlab.tasks.base import Batch, next_token_loss
from reasonlab.training.loop import make_optimizer

# ----------------------------------------------------------------------------- parameter groups


def expected_decay(model: nn.Module) -> tuple[set[str], set[str]]:
    """Parameter names that should (and should not) decay, from the module kinds: Linear and
    Embedding weights decay; Linear biases and every LayerNorm parameter do not."""
    decay, no_decay = set(), set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, _ in module.named_parameters(recurse=False):
            full = prefix + name
            if isinstance(module, nn.LayerNorm) or name == "bias":
                no_decay.add(full)
            elif isinstance(module, (nn.Linear, nn.Embedding)) and name == "weight":
                decay.add(full)
            else:
                raise AssertionError(f"unexpected parameter {full}")
    return decay, no_decay


@pytest.mark.parametrize("tie", [False, True])
def test_weight_decay_on_matrices_and_embeddings_only(tie: bool):
    """Decay on every >= 2-dim weight (embeddings included), none on norms and biases, and every
    trainable parameter in exactly one group (a tied weight once)."""
    model_cfg = GPTModelConfig(n_layers=2, d_model=16, n_heads=2, tie_embeddings=tie)
    model = build_model(model_cfg, 20, 6)
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.07, lr=3e-3))
    names = {id(p): n for n, p in model.named_parameters()}  # a tied weight under one name
    decay_names, no_decay_names = expected_decay(model)
    by_decay: dict[float, list[str]] = {}
    for group in optimizer.param_groups:
        assert group["lr"] == 3e-3
        by_decay.setdefault(group["weight_decay"], []).extend(names[id(p)] for p in group["params"])
    assert set(by_decay) == {0.07, 0.0}
    assert set(by_decay[0.07]) == decay_names & set(names.values())
    assert set(by_decay[0.0]) == no_decay_names
    every = by_decay[0.07] + by_decay[0.0]
    assert sorted(every) == sorted(names.values())  # each parameter exactly once
    assert "embed.weight" in by_decay[0.07] and "blocks.0.attn.W_qkv.weight" in by_decay[0.07]
    assert {"ln_final.weight", "blocks.1.ln2.bias", "blocks.0.mlp.W_in.bias"} <= set(by_decay[0.0])
    if not tie:
        assert {"pos_embed.weight", "unembed.weight"} <= set(by_decay[0.07])


def test_frozen_parameters_are_left_out():
    model = build_model(GPTModelConfig(n_layers=1, d_model=8, n_heads=2), 10, 4)
    model.pos_embed.weight.requires_grad_(False)
    optimizer = make_optimizer(model, TrainConfig())
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert all(p is not model.pos_embed.weight for p in grouped)
    assert len(grouped) == sum(1 for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- completion loss

V = 12


class TableModel(nn.Module):
    """logits[n, p] = by_position[p] + by_token[tokens[n, p]]: fixed random numbers, so the
    cross-entropy of every position differs and can be recomputed by hand."""

    def __init__(self, vocab: int, length: int):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.by_position = nn.Parameter(torch.randn(length, vocab, generator=generator))
        self.by_token = nn.Parameter(torch.randn(vocab, vocab, generator=generator))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.by_position[: tokens.shape[1]] + self.by_token[tokens]


def hand_loss(model: TableModel, tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over (n, p) with mask[n, p] of -log softmax(logits after tokens[n, :p])[target]."""
    terms = []
    for n in range(tokens.shape[0]):
        for p in range(1, tokens.shape[1]):
            if mask[n, p]:
                logits = model.by_position[p - 1] + model.by_token[tokens[n, p - 1]]
                terms.append(F.cross_entropy(logits[None], tokens[n, p : p + 1]))
    return torch.stack(terms).mean()


def completion_loss(model: nn.Module, tokens: Tensor, mask: Tensor) -> Tensor:
    """The trainer's loss for token tasks on a batch of whole sequences."""
    batch = Batch(tokens[:, :-1], tokens[:, 1:], mask[:, 1:], units=0)
    return next_token_loss(model(batch.inputs), batch)


def test_completion_loss_is_the_mean_over_the_masked_targets():
    """Only positions the loss mask selects count, each predicted from the tokens before it."""
    data = build_task(tiny_task(cot="after_relations"))
    rows = torch.tensor([0, 1, 2, 130, 131, 200])  # atomic facts (padded) and two-hop chains
    tokens, mask = data.train_tokens[rows], data.train_loss_mask[rows]
    assert (tokens == data.pad_id).any()  # padding is there and must not count
    model = TableModel(data.vocab_size, tokens.shape[1])
    loss = completion_loss(model, tokens, mask)
    assert loss.item() == pytest.approx(hand_loss(model, tokens, mask).item(), rel=1e-6)


class Oracle(nn.Module):
    """Predicts the true next token of ``truth`` (it cheats), except for the target positions in
    ``wrong``, where it puts its mass on another token."""

    def __init__(self, truth: Tensor, wrong: list[int]):
        super().__init__()
        self.truth, self.wrong = truth, wrong

    def forward(self, tokens: Tensor) -> Tensor:
        targets = self.truth[:, 1 : tokens.shape[1] + 1].clone()
        for p in self.wrong:
            targets[:, p - 1] = (targets[:, p - 1] + 1) % V
        return 30.0 * F.one_hot(targets, V).float()


# h r1 r2 b t </a> <pad>: the loss covers b (3), t (4) and </a> (5), nothing else
CHAIN = torch.tensor([[1, 7, 8, 3, 4, 10, 11]])
CHAIN_MASK = torch.tensor([[False, False, False, True, True, True, False]])


@pytest.mark.parametrize(("wrong", "counted"), [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1), (6, 0)])
def test_completion_loss_counts_bridge_tail_and_end_only(wrong: int, counted: int):
    """A wrong prediction at the bridge, tail or end raises the loss; one at the prompt or at
    padding does not."""
    loss = completion_loss(Oracle(CHAIN, [wrong]), CHAIN, CHAIN_MASK).item()
    if counted:
        assert loss == pytest.approx(30.0 / 3, rel=1e-4)  # one of three targets, 30 nats off
    else:
        assert loss == pytest.approx(0.0, abs=1e-6)


def test_completion_loss_on_a_training_batch_of_every_cot_pattern():
    """The tiny task's own batches: the hand computation for each CoT pattern's masks."""
    for cot in ("none", "interleaved", "restated"):
        data = build_task(tiny_config(f"task.cot={cot}").task)
        rows = torch.tensor([0, 5, 125, 140])
        tokens, mask = data.train_tokens[rows], data.train_loss_mask[rows]
        model = TableModel(data.vocab_size, tokens.shape[1])
        expected = hand_loss(model, tokens, mask).item()
        assert completion_loss(model, tokens, mask).item() == pytest.approx(expected, rel=1e-6)


def test_mamba_a_log_and_d_are_not_decayed():
    model = build_model(MambaModelConfig(n_layers=2, d_model=16, d_state=4), 20, 6)
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in optimizer.param_groups[0]["params"]}
    assert not any(n.endswith(("A_log", ".D")) for n in decayed)
    assert {"blocks.0.mixer.in_proj.weight", "blocks.1.mixer.x_proj.weight"} <= decayed
    assert len(decayed) + len(optimizer.param_groups[1]["params"]) == len(names)


def test_the_fused_adamw_kernel_steps_like_the_default_one():
    """make_optimizer uses AdamW's fused kernel on a CPU; after 5 steps with weight decay its
    weights equal those of the default implementation (same groups) to within 1% of one step's
    size lr: Adam divides by sqrt(v), which magnifies float rounding where gradients are near
    zero, while a wrong update (decay, bias correction, betas) would be off by about lr."""
    torch.manual_seed(0)
    config = GPTModelConfig(n_layers=1, d_model=16, n_heads=2)
    models = [build_model(config, 20, 8), build_model(config, 20, 8)]
    models[1].load_state_dict(models[0].state_dict())
    cfg = TrainConfig(lr=1e-2, weight_decay=1.0)  # decay's share of a step well above atol
    fused = make_optimizer(models[0], cfg)
    assert fused.defaults["fused"] is True
    name_of = {id(p): n for n, p in models[0].named_parameters()}
    twins = dict(models[1].named_parameters())
    groups = [
        {"params": [twins[name_of[id(p)]] for p in g["params"]], "weight_decay": g["weight_decay"]}
        for g in fused.param_groups
    ]
    default = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, foreach=False)
    tokens = torch.randint(0, 20, (4, 8))
    for _ in range(5):
        for model, optimizer in zip(models, (fused, default), strict=True):
            optimizer.zero_grad()
            logits = model(tokens[:, :-1])
            F.cross_entropy(logits.reshape(-1, 20), tokens[:, 1:].reshape(-1)).backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.01 * cfg.lr)
