"""The hooked GPT: hook names and shapes, manual attention = SDPA, causality, rotary positions,
tied embeddings, logit lens consistency, hooks that patch, and parity with Hugging Face GPT-2."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from helpers import tiny_gpt
from reasonlab.config import GPTModelConfig
from reasonlab.models.attention import apply_rotary, rotary_tables
from reasonlab.models.build import build_model
from reasonlab.models.gpt import GPT

VOCAB, LENGTH, D_MODEL, N_HEADS, N_LAYERS = 23, 7, 16, 2, 2


# A tiny GPT with every parameter randomized (biases and norms too), in eval mode.
random_gpt = functools.partial(
    tiny_gpt, VOCAB, 10, n_layers=N_LAYERS, d_model=D_MODEL, n_heads=N_HEADS, weight_std=0.3
)


@pytest.fixture(scope="module")
def gpt() -> GPT:
    return random_gpt()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(1))


def expected_shapes(batch: int, length: int) -> dict[str, tuple[int, ...]]:
    head_dim = D_MODEL // N_HEADS
    shapes = {
        "hook_embed": (batch, length, D_MODEL),
        "ln_final.hook_normalized": (batch, length, D_MODEL),
    }
    for i in range(N_LAYERS):
        for name in (
            "hook_resid_pre",
            "hook_resid_mid",
            "hook_resid_post",
            "hook_attn_out",
            "hook_mlp_out",
        ):
            shapes[f"blocks.{i}.{name}"] = (batch, length, D_MODEL)
        for name in ("hook_q", "hook_k", "hook_v"):
            shapes[f"blocks.{i}.attn.{name}"] = (batch, length, N_HEADS, head_dim)
        shapes[f"blocks.{i}.attn.hook_pattern"] = (batch, N_HEADS, length, length)
    return shapes


def test_run_with_cache_has_every_design_hook(gpt, tokens):
    logits, cache = gpt.run_with_cache(tokens)
    assert logits.shape == (3, LENGTH, VOCAB)
    for name, shape in expected_shapes(3, LENGTH).items():
        assert name in cache, name
        assert tuple(cache[name].shape) == shape, name
    # positions: one (L, d_model) table added to every sequence
    assert tuple(cache["hook_pos_embed"].shape[-2:]) == (LENGTH, D_MODEL)
    assert set(cache) == set(gpt.hook_names())
    assert not any(t.requires_grad for t in cache.values())


def test_cache_values_are_the_activations(gpt, tokens):
    _, cache = gpt.run_with_cache(tokens)
    torch.testing.assert_close(cache["hook_embed"], gpt.embed.weight[tokens].detach())
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"]
    )
    for i in range(N_LAYERS):
        block = f"blocks.{i}."
        torch.testing.assert_close(
            cache[block + "hook_resid_mid"],
            cache[block + "hook_resid_pre"] + cache[block + "hook_attn_out"],
        )
        torch.testing.assert_close(
            cache[block + "hook_resid_post"],
            cache[block + "hook_resid_mid"] + cache[block + "hook_mlp_out"],
        )
    torch.testing.assert_close(cache["blocks.1.hook_resid_pre"], cache["blocks.0.hook_resid_post"])


def test_names_filter(gpt, tokens):
    _, cache = gpt.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert set(cache) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    _, cache = gpt.run_with_cache(tokens, names_filter="hook_embed")
    assert set(cache) == {"hook_embed"}


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_manual_attention_equals_sdpa(positions, tokens):
    model = random_gpt(positions=positions)
    with torch.no_grad():
        sdpa = model(tokens)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: "hook_pattern" in n)
    assert len(cache) == N_LAYERS  # the manual path ran in every block
    torch.testing.assert_close(logits, sdpa, atol=1e-5, rtol=0)


def test_attention_patterns_are_causal_and_normalized(gpt, tokens):
    _, cache = gpt.run_with_cache(tokens)
    upper = torch.ones(LENGTH, LENGTH, dtype=torch.bool).triu(1)
    for i in range(N_LAYERS):
        pattern = cache[f"blocks.{i}.attn.hook_pattern"]
        assert (pattern[..., upper] == 0).all()
        assert (pattern >= 0).all()
        torch.testing.assert_close(pattern.sum(-1), torch.ones(3, N_HEADS, LENGTH))
        # the first query can only look at itself
        torch.testing.assert_close(pattern[..., 0, 0], torch.ones(3, N_HEADS))


def test_pattern_matches_queries_and_keys(gpt, tokens):
    _, cache = gpt.run_with_cache(tokens)
    q, k = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_k"]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / (D_MODEL // N_HEADS) ** 0.5
    causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool).tril()
    expected = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], expected)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causality(positions, tokens):
    model = random_gpt(positions=positions)
    with torch.no_grad():
        base = model(tokens)
        for p in range(LENGTH):
            changed = tokens.clone()
            changed[:, p] = (changed[:, p] + 1) % VOCAB
            logits = model(changed)
            torch.testing.assert_close(logits[:, :p], base[:, :p], atol=1e-6, rtol=0)
            assert not torch.allclose(logits[:, p], base[:, p])


def test_rotary_model_uses_positions():
    model = random_gpt(positions="rotary")
    assert model.pos_embed is None
    prefix = torch.tensor([[3, 5, 9]])
    swapped = torch.tensor([[5, 3, 9]])
    with torch.no_grad():
        a, b = model(prefix)[:, -1], model(swapped)[:, -1]
    # without positions the last output would not see the order of the earlier tokens
    assert not torch.allclose(a, b, atol=1e-4)
    _, cache = model.run_with_cache(prefix)
    assert "hook_pos_embed" not in cache


def test_rotary_scores_depend_on_relative_position_only():
    length, head_dim = 9, 8
    cos, sin = rotary_tables(length, head_dim)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(head_dim, generator=generator).expand(1, 1, length, head_dim)
    k = torch.randn(head_dim, generator=generator).expand(1, 1, length, head_dim)
    scores = (apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-1, -2))[0, 0]
    for offset in range(-length + 1, length):
        diagonal = scores.diagonal(offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), atol=1e-5, rtol=0)
    # position 0 is not rotated, and rotation keeps the norm
    torch.testing.assert_close(apply_rotary(q, cos, sin)[..., 0, :], q[..., 0, :])
    torch.testing.assert_close(apply_rotary(q, cos, sin).norm(dim=-1), q.norm(dim=-1))


def test_odd_head_dim_rotary_is_rejected_by_config():
    from reasonlab.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError):
        config_from_dict({"model": {"d_model": 6, "n_heads": 2, "positions": "rotary"}})


def test_tied_embeddings_share_the_weight(tokens):
    tied, untied = random_gpt(tie_embeddings=True), random_gpt(tie_embeddings=False)
    assert tied.unembed.weight is tied.embed.weight
    assert untied.unembed.weight is not untied.embed.weight
    assert tied.num_parameters() == untied.num_parameters() - VOCAB * D_MODEL
    with torch.no_grad():
        tied.embed.weight[4] += 1.0
    torch.testing.assert_close(tied.unembed.weight[4], tied.embed.weight[4])
    # and gradients from both uses accumulate on the one tensor
    tied.zero_grad()
    tied(tokens).sum().backward()
    assert tied.embed.weight.grad is not None and tied.unembed.weight.grad is tied.embed.weight.grad


def test_logit_lens_consistency(gpt, tokens):
    logits, cache = gpt.run_with_cache(tokens)
    ln = gpt.ln_final
    resid = cache[f"blocks.{N_LAYERS - 1}.hook_resid_post"]
    with torch.no_grad():
        lens = gpt.unembed(ln(resid))
        reference = nn.functional.layer_norm(resid, (D_MODEL,), ln.weight, ln.bias, ln.eps)
    torch.testing.assert_close(lens, logits, atol=1e-5, rtol=0)
    normalized = cache["ln_final.hook_normalized"]
    torch.testing.assert_close(
        normalized * ln.weight.detach() + ln.bias.detach(), reference, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        gpt.unembed(normalized * ln.weight + ln.bias).detach(), logits, atol=1e-5, rtol=0
    )
    # normalized: zero mean, unit variance per position
    torch.testing.assert_close(normalized.mean(-1), torch.zeros(3, LENGTH), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalized.pow(2).mean(-1), torch.ones(3, LENGTH), atol=1e-3, rtol=0)


def test_hook_that_returns_a_tensor_replaces_the_activation(gpt, tokens):
    with torch.no_grad():
        base = gpt(tokens)
        doubled = gpt.run_with_hooks(tokens, [("hook_embed", lambda x, hook: 2 * x)])
        observed = gpt.run_with_hooks(tokens, [("hook_embed", lambda x, hook: None)])
    assert not torch.allclose(doubled, base)
    torch.testing.assert_close(observed, base, atol=0, rtol=0)


def test_zero_ablating_the_last_residual_leaves_only_the_final_bias(gpt, tokens):
    name = f"blocks.{N_LAYERS - 1}.hook_resid_post"
    with torch.no_grad():
        logits = gpt.run_with_hooks(tokens, [(name, lambda x, hook: torch.zeros_like(x))])
        expected = gpt.unembed(gpt.ln_final.bias).expand(3, LENGTH, VOCAB)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_zero_ablating_attention_equals_manual_computation(tokens):
    model = random_gpt()
    with torch.no_grad():
        ablated = model.run_with_hooks(
            tokens,
            [
                (lambda n: n.endswith("hook_attn_out"), lambda x, hook: torch.zeros_like(x)),
            ],
        )
        resid = model.embed(tokens) + model.pos_embed(torch.arange(LENGTH))
        for block in model.blocks:
            resid = resid + block.mlp(block.ln2(resid))  # no attention at all
        manual = model.unembed(model.ln_final(resid))
    torch.testing.assert_close(ablated, manual, atol=1e-5, rtol=0)


def test_patching_one_position_changes_only_later_logits(gpt, tokens):
    def patch(x, hook):
        x = x.clone()
        x[:, 4] = 0.0
        return x

    with torch.no_grad():
        base = gpt(tokens)
        patched = gpt.run_with_hooks(tokens, [("blocks.0.hook_resid_mid", patch)])
    torch.testing.assert_close(patched[:, :4], base[:, :4], atol=1e-6, rtol=0)
    assert not torch.allclose(patched[:, 4], base[:, 4])


def no_hooks_left(model: GPT) -> bool:
    return all(not point.active for point in model.hook_dict.values())


def test_hooks_are_removed_after_the_call(gpt, tokens):
    gpt.run_with_cache(tokens)
    gpt.run_with_hooks(tokens, [("hook_embed", lambda x, hook: 2 * x)])
    assert no_hooks_left(gpt)
    with torch.no_grad():
        torch.testing.assert_close(gpt(tokens), gpt.run_with_hooks(tokens, []))


def test_hooks_are_removed_when_a_hook_raises(gpt, tokens):
    with torch.no_grad():
        base = gpt(tokens)

    def broken(x, hook):
        raise RuntimeError("hook failed")

    fwd_hooks = [("hook_embed", lambda x, hook: 3 * x), ("blocks.1.hook_resid_mid", broken)]
    with pytest.raises(RuntimeError, match="hook failed"):
        gpt.run_with_hooks(tokens, fwd_hooks)
    assert no_hooks_left(gpt)
    with torch.no_grad():
        torch.testing.assert_close(gpt(tokens), base, atol=0, rtol=0)


def test_unknown_hook_name_is_an_error_and_leaves_no_hook(gpt, tokens):
    with pytest.raises(KeyError, match=r"blocks\.9\.hook_resid_post"):
        gpt.run_with_hooks(
            tokens,
            [
                ("hook_embed", lambda x, hook: 2 * x),
                ("blocks.9.hook_resid_post", lambda x, hook: x),
            ],
        )
    assert no_hooks_left(gpt)


def test_cache_without_detach_keeps_the_graph(gpt, tokens):
    _, cache = gpt.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post", detach=False)
    assert cache["blocks.0.hook_resid_post"].requires_grad


def test_sequence_longer_than_max_seq_len(gpt):
    with pytest.raises(ValueError, match="max_seq_len"):
        gpt(torch.zeros(1, 11, dtype=torch.long))


def test_build_model_from_config():
    model = build_model(GPTModelConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=24), 13, 6)
    assert isinstance(model, GPT)
    assert model.cfg.max_seq_len == 6 and model.cfg.vocab_size == 13
    assert model.blocks[0].mlp.W_in.out_features == 24


def test_build_model_refuses_a_short_max_seq_len():
    from reasonlab.config import ConfigError

    with pytest.raises(ConfigError, match=r"^model\.max_seq_len"):
        build_model(GPTModelConfig(n_layers=1, d_model=16, n_heads=2, max_seq_len=4), 13, 6)


def test_continuous_inputs_and_outputs():
    model = tiny_gpt(1, 5, n_layers=1, d_model=16, n_heads=2, input_dim=3, output_dim=2)
    out = model(torch.randn(4, 5, 3))
    assert out.shape == (4, 5, 2)


def test_gpt_matches_hugging_face_gpt2(tokens):
    transformers = pytest.importorskip("transformers")
    ours = random_gpt(seed=3)
    hf_config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=ours.cfg.max_seq_len,
        n_embd=D_MODEL,
        n_layer=N_LAYERS,
        n_head=N_HEADS,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=False,
    )
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    state = {
        "transformer.wte.weight": ours.embed.weight,
        "transformer.wpe.weight": ours.pos_embed.weight,
        "transformer.ln_f.weight": ours.ln_final.weight,
        "transformer.ln_f.bias": ours.ln_final.bias,
        "lm_head.weight": ours.unembed.weight,
    }
    for i, block in enumerate(ours.blocks):
        prefix = f"transformer.h.{i}."
        pairs = {"ln_1": block.ln1, "ln_2": block.ln2}
        for hf_name, norm in pairs.items():
            state[prefix + hf_name + ".weight"] = norm.weight
            state[prefix + hf_name + ".bias"] = norm.bias
        # HF's Conv1D stores (in, out): the transpose of nn.Linear's (out, in)
        linears = {
            "attn.c_attn": block.attn.W_qkv,
            "attn.c_proj": block.attn.W_out,
            "mlp.c_fc": block.mlp.W_in,
            "mlp.c_proj": block.mlp.W_out,
        }
        for hf_name, linear in linears.items():
            state[prefix + hf_name + ".weight"] = linear.weight.t()
            state[prefix + hf_name + ".bias"] = linear.bias
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    assert {name for name, _ in hf.named_parameters()} <= set(state)
    hf.load_state_dict(state, strict=False)
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
        logits = ours(tokens)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
