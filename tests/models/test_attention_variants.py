"""The attention variants (models/attention.py): each layer's head output equals the single-query
form of analysis/dual.py, cached decoding equals the whole sequence, augmented attention starts
as softmax, the hooks see what the layer uses, and configs name what a model kind lacks."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from helpers import run_cli, tiny_gpt
from reasonlab.analysis import dual
from reasonlab.config import config_from_dict
from reasonlab.runs.hashing import config_hash

KINDS = ("softmax", "linear", "regularized", "augmented", "negative")
HOOKS = [f"blocks.0.attn.hook_{name}" for name in ("q", "k", "v", "z")]


def vector_gpt(kind: str, **extra: object):
    """One layer of attention ``kind`` reading 5-vectors and writing one number, in float64."""
    return tiny_gpt(0, 12, n_layers=1, attention=kind, input_dim=5, output_dim=1, **extra).double()


def head_case(model, inputs: torch.Tensor, head: int, position: int):
    _, cache = model.run_with_cache(inputs, names_filter=lambda name: name in HOOKS)
    q, k, v, z = (cache[name][0, :, head] for name in HOOKS)
    return q[position], k[: position + 1], v[: position + 1], z[position]


def expected_output(kind: str, q, K, V, model) -> torch.Tensor:
    attention = model.blocks[0].attn
    if kind == "regularized":
        return dual.regularized_attention(q, K, V, 1.0 - attention.reg)
    if kind == "negative":
        return dual.negative_attention(q, K, V, attention.beta)
    if kind == "linear":  # the scores averaged over the visible keys, no softmax
        return (K @ q / math.sqrt(q.shape[0]) / K.shape[0]) @ V
    return dual.softmax_attention(q, K, V)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("position", [0, 1, 6, 11])
def test_each_head_computes_its_single_query_form(kind, position):
    extra = {"attention_hidden": 8} if kind == "augmented" else {}
    model = vector_gpt(kind, **extra)
    if kind == "augmented":  # leave the identity start, so that the MLPs matter
        for module in model.modules():
            if hasattr(module, "W_back"):
                torch.nn.init.normal_(module.W_back.weight, std=0.5)
    inputs = torch.randn(2, 12, 5, dtype=torch.float64)
    for head in (0, 1):
        q, K, V, z = head_case(model, inputs, head, position)
        assert torch.allclose(z, expected_output(kind, q, K, V, model), atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_decoding_equals_the_whole_sequence(kind):
    model = vector_gpt(kind)
    inputs = torch.randn(3, 12, 5, dtype=torch.float64)
    whole = model(inputs)
    state = model.new_state(3)
    pieces = [model(inputs[:, :4], state=state), model(inputs[:, 4:5], state=state)]
    pieces.append(model(inputs[:, 5:], state=state))
    assert torch.allclose(torch.cat(pieces, 1), whole, atol=1e-12)


def test_augmented_attention_starts_as_softmax():
    augmented, softmax = vector_gpt("augmented"), vector_gpt("softmax")
    shared = {k: v for k, v in augmented.state_dict().items() if "augment" not in k}
    softmax.load_state_dict(shared)
    inputs = torch.randn(2, 12, 5, dtype=torch.float64)
    assert torch.allclose(augmented(inputs), softmax(inputs), atol=1e-12)
    assert any("augment_k" in name for name, _ in augmented.named_parameters())


def test_the_variants_change_the_output():
    inputs = torch.randn(2, 12, 5, dtype=torch.float64)
    softmax = vector_gpt("softmax")(inputs)
    for kind in ("linear", "regularized", "negative"):
        assert not torch.allclose(vector_gpt(kind)(inputs), softmax)


def test_hooked_pattern_is_the_variant_weights():
    """hook_pattern holds the weights the layer applied: the regularized diagonal scaled."""
    model = vector_gpt("regularized", attention_reg=0.25)
    inputs = torch.randn(1, 12, 5, dtype=torch.float64)
    _, cache = model.run_with_cache(inputs)
    pattern = cache["blocks.0.attn.hook_pattern"][0, 0]
    _, cache_softmax = vector_gpt("softmax").run_with_cache(inputs)
    plain = cache_softmax["blocks.0.attn.hook_pattern"][0, 0]
    assert torch.allclose(pattern.diagonal(), 0.75 * plain.diagonal())
    off = ~torch.eye(12, dtype=torch.bool)
    assert torch.allclose(pattern[off], plain[off])


def test_softmax_checkpoints_keep_the_hash_they_were_saved_with():
    """Checkpoints written before the attention keys existed hash the model section without them:
    a softmax config must still give that hash (resume), a variant must not."""
    config = config_from_dict({"model": {"kind": "gpt"}})
    data = config.model_dump(mode="json", include={"task", "model", "train"})
    data["train"].pop("device")
    data["train"].pop("steps")
    data["train"].pop("on_nonfinite")  # added later still: what to do on a NaN, not hashed
    for key in ("attention", "attention_reg", "attention_hidden", "attention_beta"):
        data["model"].pop(key)
    before = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert config_hash(config) == before
    negative = config_from_dict({"model": {"kind": "gpt", "attention": "negative"}})
    assert config_hash(negative) != before


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ({"kind": "mamba", "attention": "negative"}, "model.attention"),
        ({"kind": "gpt", "attention": "sparse"}, "model.attention"),
        ({"kind": "gpt", "attention": "regularized", "attention_reg": 1.5}, "model.attention_reg"),
    ],
)
def test_an_attention_the_model_lacks_exits_2(tmp_path, capsys, model, named):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"task": {"kind": "icl"}, "model": model}))
    code, _, err = run_cli(["run", path, "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert err.strip().startswith(f"error: {named}") and len(err.strip().splitlines()) == 1
