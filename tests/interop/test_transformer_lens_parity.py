"""Our GPT loaded into a TransformerLens HookedTransformer agrees with ours: logits, cached
activations, activation patching and the logit lens, to 1e-4."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_gpt
from reasonlab.analysis.logit_lens import logit_lens, ranks_of
from reasonlab.analysis.patching import hook_rows, patch_grid
from reasonlab.config import ConfigError
from reasonlab.interop.transformer_lens import to_hooked_transformer
from reasonlab.models.gpt import GPT

transformer_lens = pytest.importorskip(
    "transformer_lens", reason="optional extra: pip install 'reasonlab[lens]'"
)
try:
    from transformer_lens import HookedTransformer  # noqa: F401
except ImportError:
    pytest.skip(
        "transformer-lens >= 4 has no HookedTransformer: pip install 'transformer-lens<4'",
        allow_module_level=True,
    )

VOCAB, SEQ_LEN, TOLERANCE = 50, 6, 1e-4


def random_gpt(seed: int = 0, **fields: object) -> GPT:
    """A small GPT with weights large enough that attention is far from uniform and every layer
    changes the prediction (GPT-2's 0.02 init would make the check nearly trivial)."""
    model = tiny_gpt(VOCAB, SEQ_LEN, seed=seed, d_model=32, n_heads=4, **fields)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_final.weight")):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.3 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def models() -> tuple[GPT, torch.nn.Module]:
    ours = random_gpt()
    return ours, to_hooked_transformer(ours)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (8, SEQ_LEN), generator=torch.Generator().manual_seed(1))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def test_logits_agree(models, tokens) -> None:
    ours, lens = models
    with torch.no_grad():
        expected = ours(tokens)
        assert expected.std() > 1.0  # a non-trivial function
        assert max_diff(lens(tokens), expected) < TOLERANCE


@pytest.mark.parametrize("tied", [True, False])
def test_logits_agree_with_and_without_tied_embeddings(tied: bool, tokens) -> None:
    ours = random_gpt(seed=2, tie_embeddings=tied, d_mlp=48)
    with torch.no_grad():
        assert max_diff(to_hooked_transformer(ours)(tokens), ours(tokens)) < TOLERANCE


@pytest.mark.parametrize("name", ["blocks.1.hook_resid_mid", "blocks.0.attn.hook_pattern"])
def test_cached_activations_agree(models, tokens, name: str) -> None:
    ours, lens = models
    _, our_cache = ours.run_with_cache(tokens, names_filter=[name])
    _, lens_cache = lens.run_with_cache(tokens, names_filter=[name])
    assert max_diff(lens_cache[name], our_cache[name]) < TOLERANCE
    if name.endswith("hook_pattern"):  # (batch, heads, query, key), causal, rows sum to 1
        assert our_cache[name].shape == (len(tokens), 4, SEQ_LEN, SEQ_LEN)
        assert our_cache[name].max() > 0.9


def lens_patch_grid(lens, names, clean, corrupt, clean_target, corrupt_target, read_position):
    """Residual-stream patching written with TransformerLens's own run_with_cache/run_with_hooks:
    mean logit(clean target) - logit(counterfactual target) at the read position."""
    _, cache = lens.run_with_cache(corrupt, names_filter=names)
    grid = torch.full((len(names), clean.shape[1]), float("nan"))
    rows = torch.arange(len(clean))
    for layer, name in enumerate(names):
        for position in range(read_position + 1):

            def patch(activation, hook, name=name, position=position):
                activation[:, position] = cache[name][:, position]
                return activation

            with torch.no_grad():
                logits = lens.run_with_hooks(clean, fwd_hooks=[(name, patch)])[:, read_position]
            grid[layer, position] = (
                logits[rows, clean_target] - logits[rows, corrupt_target]
            ).mean()
    return grid


def test_activation_patching_agrees(models, tokens) -> None:
    ours, lens = models
    clean = tokens
    corrupt = clean.clone()
    corrupt[:, 2] = (clean[:, 2] + 1 + torch.arange(len(clean))) % VOCAB  # one token changed
    read_position = SEQ_LEN - 1
    with torch.no_grad():
        clean_target = ours(clean)[:, read_position].argmax(-1)
        corrupt_target = ours(corrupt)[:, read_position].argmax(-1)
    result = patch_grid(ours, clean, corrupt, clean_target, corrupt_target, read_position)
    names = hook_rows(ours, "resid")
    assert names == ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in (0, 1)]
    expected = lens_patch_grid(
        lens, names, clean, corrupt, clean_target, corrupt_target, read_position
    )
    assert torch.equal(result.logit_diff.isnan(), expected.isnan())
    finite = ~expected.isnan()
    assert max_diff(result.logit_diff[finite], expected[finite]) < TOLERANCE
    # The changed token matters: patching it at the embeddings moves the logit difference.
    assert result.logit_diff[0, 2] < result.logit_diff[0, 0] - 0.1


def test_logit_lens_last_layer_matches_lens_ranks(models, tokens) -> None:
    ours, lens = models
    target = tokens[:, -1]
    result = logit_lens(ours, tokens, target)
    with torch.no_grad():
        lens_logits = lens(tokens)
    expected = ranks_of(lens_logits, target[:, None].expand(tokens.shape))
    # Two implementations: a rank may differ only by logits within TOLERANCE of the target's.
    target_logit = lens_logits.gather(-1, target[:, None, None].expand(*tokens.shape, 1))
    assert ((lens_logits > target_logit + TOLERANCE).sum(-1) <= result.rank[-1]).all()
    assert (result.rank[-1] <= (lens_logits > target_logit - TOLERANCE).sum(-1)).all()
    assert expected.float().mean() > 0  # not every target is top-1


def test_rotary_model_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model\.positions"):
        to_hooked_transformer(random_gpt(positions="rotary"))
