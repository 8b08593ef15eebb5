"""The Mamba family: parity with mambapy and Hugging Face, the reference initialization, hook
points, incremental decoding, training and building."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_mamba
from reasonlab.bench.step import MambapyLM
from reasonlab.config import MambaModelConfig
from reasonlab.models import mamba as mamba_module
from reasonlab.models.build import build_model
from reasonlab.models.mamba import Mamba, MambaConfig, MambaState

VOCAB, LAYERS, WIDTH, STATE, EXPAND, CONV, RANK = 23, 2, 16, 4, 2, 4, 3
BATCH, LENGTH = 3, 13  # a length that is not a power of two (mambapy pads those)


# These models are tiny: with a second thread on a busy shared CPU each small op waits for the
# other thread, and the tests run 10-20x slower.
pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(seed: int = 0, **fields: object) -> Mamba:
    shape = dict(
        n_layers=LAYERS, d_model=WIDTH, d_state=STATE, expand=EXPAND, d_conv=CONV, dt_rank=RANK
    )
    model = tiny_mamba(VOCAB, seed=seed, **{**shape, **fields})
    # Non-trivial norms gains and D, so that parity checks see every parameter.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("norm.weight", "ln_final.weight", "mixer.D")):
                param.add_(0.1 * torch.randn_like(param))
    return model


def tokens(batch: int = BATCH, length: int = LENGTH, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)


# ----------------------------------------------------------------------------- parity


MAMBAPY_NAMES = {
    "embed.": "embedding.",
    "blocks.": "mamba.layers.",
    "ln_final.": "norm_f.",
    "unembed.": "lm_head.",
}


def mambapy_name(name: str) -> str:
    prefix = next(p for p in MAMBAPY_NAMES if name.startswith(p))
    return MAMBAPY_NAMES[prefix] + name[len(prefix) :]


def mambapy_copy(model: Mamba) -> torch.nn.Module:
    """A mambapy language model of the same shape holding our weights."""
    pytest.importorskip("mambapy.mamba")
    reference = MambapyLM(model.cfg)
    reference.load_state_dict({mambapy_name(k): v.clone() for k, v in model.state_dict().items()})
    return reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_gradients_match_mambapy(dtype: torch.dtype) -> None:
    # mambapy computes A and D in float32 even in a float64 model: 1e-8, not 1e-12, in float64.
    tolerance = 1e-5 if dtype == torch.float32 else 1e-8
    model = small_model().to(dtype)
    reference = mambapy_copy(model).to(dtype)
    inputs = tokens()
    targets = tokens(seed=2)
    ours = model(inputs)
    theirs = reference(inputs)
    torch.testing.assert_close(ours, theirs, atol=tolerance, rtol=tolerance)
    F.cross_entropy(ours.flatten(0, 1), targets.flatten()).backward()
    F.cross_entropy(theirs.flatten(0, 1), targets.flatten()).backward()
    their_params = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        other = their_params[mambapy_name(name)]
        torch.testing.assert_close(param.grad, other.grad, atol=tolerance, rtol=tolerance, msg=name)


@pytest.mark.parametrize("tied", [False, True])
def test_logits_match_hugging_face(tied: bool) -> None:
    pytest.importorskip("transformers")
    from reasonlab.interop.huggingface import to_hf

    model = small_model(tie_embeddings=tied).eval()
    hf = to_hf(model)
    assert type(hf).__name__ == "MambaForCausalLM"
    if tied:
        assert hf.lm_head.weight.data_ptr() == hf.backbone.embeddings.weight.data_ptr()
    inputs = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), hf(input_ids=inputs).logits, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- initialization


def test_reference_initialization() -> None:
    model = small_model(seed=3, n_layers=4, d_model=32)
    cfg = model.cfg
    # small_model perturbs D; a fresh model keeps the reference D = 1.
    torch.manual_seed(3)
    fresh = Mamba(cfg)
    for block in fresh.blocks:
        mixer = block.mixer
        A = -torch.exp(mixer.A_log)
        torch.testing.assert_close(A, -torch.arange(1.0, STATE + 1).expand(cfg.d_inner, -1))
        assert torch.equal(mixer.D, torch.ones(cfg.d_inner))
        dt = F.softplus(mixer.dt_proj.bias)
        assert dt.min() >= cfg.dt_min * (1 - 1e-4) and dt.max() <= cfg.dt_max * (1 + 1e-4)
        assert mixer.dt_proj.weight.abs().max() <= RANK**-0.5
        # kaiming-uniform bound 1/sqrt(fan_in), then the prenorm-residual rescale 1/sqrt(layers)
        bound = 1 / math.sqrt(cfg.d_inner) / math.sqrt(cfg.n_layers)
        assert mixer.out_proj.weight.abs().max() <= bound
        assert mixer.out_proj.weight.abs().max() > bound / 2
    assert abs(fresh.embed.weight.std().item() - 0.02) < 0.004


def test_initialization_on_the_meta_device_counts_the_same_parameters() -> None:
    with torch.device("meta"):
        meta = Mamba(MambaConfig(vocab_size=VOCAB, d_model=WIDTH, dt_rank=RANK))
    assert meta.num_parameters() == Mamba(meta.cfg).num_parameters()


# ----------------------------------------------------------------------------- hooks


def test_hook_names_and_shapes() -> None:
    model = small_model()
    inputs = tokens()
    _, cache = model.run_with_cache(inputs)
    d_inner = model.cfg.d_inner
    expected = {
        "hook_embed": (BATCH, LENGTH, WIDTH),
        "ln_final.hook_normalized": (BATCH, LENGTH, WIDTH),
        "ln_final.hook_scale": (BATCH, LENGTH, 1),
    }
    for i in range(LAYERS):
        for name in ("hook_resid_pre", "hook_mixer_out", "hook_resid_post"):
            expected[f"blocks.{i}.{name}"] = (BATCH, LENGTH, WIDTH)
        expected[f"blocks.{i}.mixer.hook_delta"] = (BATCH, LENGTH, d_inner)
        expected[f"blocks.{i}.mixer.hook_B"] = (BATCH, LENGTH, STATE)
        expected[f"blocks.{i}.mixer.hook_C"] = (BATCH, LENGTH, STATE)
        expected[f"blocks.{i}.mixer.hook_ssm_state"] = (BATCH, LENGTH, d_inner, STATE)
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert model.residual_names() == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"] + [
        f"blocks.{i}.hook_resid_post" for i in range(1, LAYERS)
    ]
    assert model.component_hooks() == {
        "mixer_out": [f"blocks.{i}.hook_mixer_out" for i in range(LAYERS)]
    }
    assert model.describe() == (
        f"Mamba: {LAYERS} layers, width {WIDTH}, d_state {STATE}, expand {EXPAND}, "
        f"d_conv {CONV}, dt_rank {RANK}"
    )


def test_read_out_of_the_last_residual_gives_the_logits() -> None:
    model = small_model()
    inputs = tokens()
    logits, cache = model.run_with_cache(inputs, names_filter=model.residual_names())
    last = cache[model.residual_names()[-1]]
    torch.testing.assert_close(model.read_out(last), logits)


def test_ssm_state_hook_matches_a_reference_loop() -> None:
    model = small_model()
    inputs = tokens()
    mixer_inputs: dict[str, torch.Tensor] = {}

    # u, the x_proj input after the convolution and SiLU, is not a hook point: read it directly.
    def keep_u(module: torch.nn.Module, args: tuple[torch.Tensor], output: torch.Tensor) -> None:
        mixer_inputs["u"] = args[0].detach()

    handle = model.blocks[1].mixer.x_proj.register_forward_hook(keep_u)
    try:
        fast = model(inputs)
        logits, cache = model.run_with_cache(inputs)
    finally:
        handle.remove()
    torch.testing.assert_close(logits, fast, atol=1e-5, rtol=1e-5)
    prefix = "blocks.1.mixer."
    delta, B = cache[prefix + "hook_delta"], cache[prefix + "hook_B"]
    u = mixer_inputs["u"]  # (b, L, d_inner)
    A = -torch.exp(model.blocks[1].mixer.A_log.detach())
    state = torch.zeros(BATCH, model.cfg.d_inner, STATE)
    for t in range(LENGTH):
        decay = torch.exp(delta[:, t, :, None] * A)
        state = decay * state + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        torch.testing.assert_close(cache[prefix + "hook_ssm_state"][:, t], state)


def test_gradients_through_the_state_sequence_match_the_fast_path() -> None:
    model = small_model()
    inputs = tokens()
    model(inputs).square().mean().backward()
    fast = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    watch = [("blocks.0.mixer.hook_ssm_state", lambda act, hook: None)]
    model.run_with_hooks(inputs, watch).square().mean().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, fast[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("hook", ["hook_ssm_state", "hook_delta", "hook_B", "hook_C"])
def test_patching_a_mixer_hook_changes_the_output(hook: str) -> None:
    model = small_model()
    inputs = tokens()
    clean = model(inputs)
    name = f"blocks.0.mixer.{hook}"
    same = model.run_with_hooks(inputs, [(name, lambda act, h: act.clone())])
    torch.testing.assert_close(same, clean, atol=1e-5, rtol=1e-5)
    patched = model.run_with_hooks(inputs, [(name, lambda act, h: torch.zeros_like(act))])
    assert (patched - clean).abs().max() > 1e-3


def test_fast_path_without_inner_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The state sequence is built only for hook_ssm_state, and delta's bias and softplus stay
    inside the scan unless hook_delta is watched."""
    calls = {"states": 0, "biased": 0}
    real_states, real_scan = mamba_module.selective_scan_states, mamba_module.selective_scan

    def counting_states(*args: object, **kwargs: object) -> torch.Tensor:
        calls["states"] += 1
        return real_states(*args, **kwargs)  # type: ignore[arg-type]

    def counting_scan(*args: object, **kwargs: object) -> torch.Tensor:
        calls["biased"] += kwargs["delta_bias"] is not None
        return real_scan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mamba_module, "selective_scan_states", counting_states)
    monkeypatch.setattr(mamba_module, "selective_scan", counting_scan)
    model = small_model()
    inputs = tokens()
    model(inputs)
    model.run_with_cache(inputs, names_filter=lambda name: "ssm_state" not in name)
    assert calls["states"] == 0
    model.run_with_cache(inputs, names_filter=model.residual_names())
    # Biased inside the scan: the plain forward and the residual-only cache, not the cache that
    # watches hook_delta.
    assert calls["biased"] == 2 * LAYERS
    model.run_with_cache(inputs, names_filter="blocks.1.mixer.hook_ssm_state")
    assert calls["states"] == 1


# ----------------------------------------------------------------------------- decoding


def pieces(length: int, rng: random.Random) -> list[tuple[int, int]]:
    cuts = sorted(rng.sample(range(1, length), rng.randint(1, 5)))
    bounds = [0, *cuts, length]
    return list(itertools.pairwise(bounds))


def decode(model: Mamba, inputs: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    state = model.new_state(inputs.shape[0])
    logits = [model(inputs[:, start:end], state=state) for start, end in spans]
    assert isinstance(state, MambaState) and state.length == inputs.shape[1]
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("d_conv", [1, 2, 4])
def test_decoding_in_pieces_gives_the_whole_forward(d_conv: int) -> None:
    model = small_model(d_conv=d_conv).eval()
    inputs = tokens(length=17)
    with torch.no_grad():
        whole = model(inputs)
        one_by_one = decode(model, inputs, [(t, t + 1) for t in range(17)])
        torch.testing.assert_close(one_by_one, whole, atol=1e-5, rtol=1e-5)
        rng = random.Random(d_conv)
        for _ in range(4):
            mixed = decode(model, inputs, pieces(17, rng))
            torch.testing.assert_close(mixed, whole, atol=1e-5, rtol=1e-5)


def test_decoding_in_pieces_with_hooks_gives_the_whole_cache() -> None:
    model = small_model().eval()
    inputs = tokens(length=15)
    whole_logits, whole = model.run_with_cache(inputs)
    for spans in ([(0, 1), (1, 6), (6, 7), (7, 15)], [(0, 8), (8, 9), (9, 15)]):
        state = model.new_state(BATCH)
        parts = [model.run_with_cache(inputs[:, a:b], state=state) for a, b in spans]
        logits = torch.cat([p[0] for p in parts], dim=1)
        torch.testing.assert_close(logits, whole_logits, atol=1e-5, rtol=1e-5)
        for name, activation in whole.items():
            stitched = torch.cat([p[1][name] for p in parts], dim=1)
            torch.testing.assert_close(stitched, activation, atol=1e-5, rtol=1e-5, msg=name)


def test_patching_while_decoding_carries_into_later_pieces() -> None:
    """A patched state changes the state that decoding keeps, so later positions see it too."""
    model = small_model().eval()
    inputs = tokens(length=10)
    zero_state = [("blocks.0.mixer.hook_ssm_state", lambda act, hook: torch.zeros_like(act))]
    with torch.no_grad():
        whole = model.run_with_hooks(inputs[:, :6], zero_state)
        clean = model(inputs)
        state = model.new_state(BATCH)
        patched = model.run_with_hooks(inputs[:, :6], zero_state, state=state)
        later = model(inputs[:, 6:], state=state)
    torch.testing.assert_close(patched, whole)
    assert (later - clean[:, 6:]).abs().max() > 1e-4


def test_decoding_in_float64() -> None:
    model = small_model().double().eval()
    inputs = tokens(length=9)
    with torch.no_grad():
        whole = model(inputs)
        pieced = decode(model, inputs, [(0, 3), (3, 4), (4, 9)])
    assert whole.dtype == torch.float64
    torch.testing.assert_close(pieced, whole, atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------- the rest


def test_tied_embeddings_share_the_tensor() -> None:
    tied, untied = small_model(tie_embeddings=True), small_model(tie_embeddings=False)
    assert tied.unembed.weight is tied.embed.weight
    assert untied.num_parameters() - tied.num_parameters() == VOCAB * WIDTH
    tied(tokens()).sum().backward()
    assert tied.embed.weight.grad is not None


def test_a_training_step_reduces_the_loss_on_a_copy_batch() -> None:
    model = small_model(d_model=32)
    generator = torch.Generator().manual_seed(0)
    half = torch.randint(1, 8, (32, 6), generator=generator)
    batch = torch.cat([half, half], dim=1)  # x x: the second half copies the first
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits[:, 5:].flatten(0, 1), batch[:, 6:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_bfloat16_autocast_forward_and_backward() -> None:
    model = small_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens())
    logits.float().square().mean().backward()
    assert torch.isfinite(logits.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_build_model_from_the_config() -> None:
    config = MambaModelConfig(n_layers=2, d_model=40, d_state=8, expand=3, d_conv=3)
    model = build_model(config, VOCAB, 50)
    assert isinstance(model, Mamba) and model.family == "mamba"
    assert model.cfg.dt_rank == math.ceil(40 / 16) and model.cfg.d_inner == 120
    assert model(tokens(length=70)).shape == (BATCH, 70, VOCAB)  # no length limit
    tied = build_model(MambaModelConfig(tie_embeddings=True, dt_rank=5), VOCAB, 50)
    assert tied.cfg.dt_rank == 5 and tied.unembed.weight is tied.embed.weight


@pytest.mark.parametrize("tied", [False, True])
def test_state_dict_round_trip(tied: bool) -> None:
    model = small_model(seed=0, tie_embeddings=tied)
    other = small_model(seed=1, tie_embeddings=tied)
    inputs = tokens()
    assert not torch.allclose(model(inputs), other(inputs))
    other.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    torch.testing.assert_close(other(inputs), model(inputs))
    assert "blocks.0.mixer.dt_proj.bias" in model.state_dict()
    assert (other.unembed.weight is other.embed.weight) == tied
