"""The dual-model check (reasonlab.analysis.dual): one gradient step of the dual linear model
equals random-feature attention to rounding (also with a norm regularizer and negative samples,
against their attention counterparts), random-feature attention tends to softmax attention at
the Monte Carlo rate, and a trained GPT head's (q, K, V) reproduce the head's own output."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import one_line_error, run_cli, tiny_config, tiny_gpt
from reasonlab.analysis.dual import dual_model_prediction as dual
from reasonlab.analysis.dual import dual_model_prediction_steps as dual_steps
from reasonlab.analysis.dual import (
    gap_curve,
    negative_attention,
    positive_features,
    random_feature_attention,
    random_feature_weights,
    regularized_attention,
    softmax_attention,
    softmax_weights,
)
from reasonlab.analysis.dual_check import layer_inputs
from reasonlab.config import ConfigError
from reasonlab.models.gpt import GPT, GPTConfig
from reasonlab.models.mamba import Mamba, MambaConfig

F64 = torch.float64


# Tiny tensors: one thread is faster than two fighting a busy machine's other jobs.
pytestmark = pytest.mark.usefixtures("one_thread")


def random_case(T: int, d: int = 4, d_v: int = 3, m: int = 64, seed: int = 0):
    """q (d,), K (T+1, d), V (T+1, d_v), omega (m, d): entries N(0, 1), float64."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(*shape, generator=generator, dtype=F64)  # noqa: E731
    return draw(d), draw(T + 1, d), draw(T + 1, d_v), draw(m, d)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-10) -> None:
    assert actual.dtype == F64 and actual.shape == expected.shape
    assert float((actual - expected).abs().max()) < tol


# ------------------------------------------------------------------------------ the identities


@pytest.mark.parametrize("T", [0, 1, 7])
@pytest.mark.parametrize("eta", [0.3, 1.0, 4.0])
def test_one_dual_step_is_random_feature_attention(T, eta):
    q, K, V, omega = random_case(T, seed=T)
    estimate = random_feature_attention(q, K, V, omega)
    assert_close(dual(q, K, V, omega, eta=eta), estimate, 1e-12)
    if T == 0:  # one token attends only to itself
        assert_close(estimate, V[0], 1e-12)


def test_random_feature_attention_is_the_features_formula():
    """The stabilised features give sum_i v_i phi(k'_i).phi(q') / D with phi as defined."""
    q, K, V, omega = random_case(5)
    scale = q.shape[0] ** -0.25
    scores = positive_features(K * scale, omega) @ positive_features(q * scale, omega)
    assert_close(random_feature_attention(q, K, V, omega), scores @ V / scores.sum(), 1e-12)
    # keys far too large for the plain features (exp underflows to 0) still give a finite answer
    huge = random_feature_attention(q * 30, K * 30, V, omega)
    assert torch.isfinite(huge).all()


def test_positive_features_estimate_the_exponential_kernel():
    generator = torch.Generator().manual_seed(1)
    x, y = 0.4 * torch.randn(2, 3, generator=generator, dtype=F64)
    omega = torch.randn(200_000, 3, generator=generator, dtype=F64)
    estimate = positive_features(x, omega) @ positive_features(y, omega)
    assert float(estimate) == pytest.approx(math.exp(float(x @ y)), rel=0.02)
    assert (positive_features(x, omega) > 0).all()


@pytest.mark.parametrize("T", [0, 1, 6])
def test_regularized_dual_is_regularized_attention(T):
    q, K, V, omega = random_case(T, seed=10 + T)
    for eta, reg in [(1.0, 0.2), (0.5, 0.9), (2.0, 0.1)]:
        expected = regularized_attention(q, K, V, 1 - eta * reg, omega=omega)
        assert_close(dual(q, K, V, omega, eta=eta, reg=reg), expected)
    # the query's own term alone is scaled
    weights = random_feature_weights(q, K, omega)
    by_hand = weights[:-1] @ V[:-1] + 0.25 * weights[-1] * V[-1]
    assert_close(regularized_attention(q, K, V, 0.25, omega=omega), by_hand, 1e-12)


@pytest.mark.parametrize("T", [0, 1, 6])
def test_negative_dual_is_negative_attention(T):
    q, K, V, omega = random_case(T, seed=20 + T)
    for beta in (0.3, 1.0):
        expected = negative_attention(q, K, V, beta, omega=omega)
        assert_close(dual(q, K, V, omega, negative_beta=beta), expected)
    if T > 0:  # the weight form: a_j - beta (1 - a_j) / T on each value
        a = softmax_weights(q, K)
        assert_close(negative_attention(q, K, V, 0.7), (a - 0.7 * (1 - a) / T) @ V, 1e-12)
    else:  # no other value to contrast with
        assert_close(negative_attention(q, K, V, 0.7), V[0], 1e-12)


def test_exact_variants_reduce_to_softmax_attention():
    q, K, V, _ = random_case(5, seed=3)
    exact = softmax_attention(q, K, V)
    by_hand = torch.softmax(K @ q / 2.0, 0) @ V  # d = 4: scale 1/sqrt(d) = 1/2
    assert_close(exact, by_hand, 1e-12)
    assert_close(regularized_attention(q, K, V, 1.0), exact, 1e-12)
    assert_close(negative_attention(q, K, V, 0.0), exact, 1e-12)


@pytest.mark.parametrize("T", [0, 1, 5])
def test_single_example_steps(T):
    q, K, V, omega = random_case(T, seed=30 + T)
    assert_close(dual_steps(q, K, V, omega, eta=0.7), dual(q, K, V, omega, eta=0.7))
    eta, reg = 0.5, 0.4
    decay = 1 - eta * reg
    w = random_feature_weights(q, K, omega)
    # W_0 decays at each of the T steps, example i (1-based) at the T - i steps after its own
    factors = torch.tensor([decay ** (T - i) for i in range(1, T + 1)] + [decay**T], dtype=F64)
    assert_close(dual_steps(q, K, V, omega, eta=eta, reg=reg), (factors * w) @ V)


def test_random_features_converge_at_the_monte_carlo_rate():
    result = gap_curve()
    assert result["ms"] == [16, 64, 256, 1024, 4096] and result["seeds"] >= 20
    assert max(result["dual_vs_rf"]) < 1e-10
    assert abs(result["slope"] + 0.5) < 0.1
    assert result["rf_vs_softmax"][0] > 10 * result["rf_vs_softmax"][-1]


# ------------------------------------------------------------------------- a GPT's own heads


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_layer_inputs_reproduce_the_heads_output(positions):
    model = tiny_gpt(11, 10, positions=positions).double()
    with torch.no_grad():  # sharper attention than the initialisation's near-uniform one
        for block in model.blocks:
            block.attn.W_qkv.weight.mul_(40.0)
    tokens = torch.randint(0, 11, (2, 9))
    names = [f"blocks.{i}.attn.hook_z" for i in range(2)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    for layer in range(2):
        for head in range(2):
            for row, position in [(0, 0), (0, 4), (1, 8)]:
                q, K, V = layer_inputs(model, tokens, layer, head, position, row=row)
                assert K.shape == V.shape == (position + 1, 8)
                z = cache[names[layer]][row, position, head]
                assert_close(softmax_attention(q, K, V), z)
    # not trivially uniform: the weights of the last query differ from 1 / (position + 1)
    q, K, _ = layer_inputs(model, tokens, 1, 1, 8)
    assert float(softmax_weights(q, K).max()) > 0.2


def test_layer_inputs_refuses_a_model_without_attention_and_bad_indices():
    mamba = Mamba(MambaConfig(vocab_size=7, n_layers=1, d_model=8, d_state=2))
    tokens = torch.randint(0, 7, (1, 5))
    with pytest.raises(ConfigError, match=r"^model\.kind: "):
        layer_inputs(mamba, tokens, 0, 0, 4)
    gpt = GPT(GPTConfig(vocab_size=7, max_seq_len=8, n_layers=1, d_model=8, n_heads=2))
    with pytest.raises(ConfigError, match=r"--head: 2 is out of range \(0\.\.1\)"):
        layer_inputs(gpt, tokens, 0, 2, 4)
    with pytest.raises(ConfigError, match="--layer"):
        layer_inputs(gpt, tokens, 1, 0, 4)


# ------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from reasonlab.training.loop import train

    root = tmp_path_factory.mktemp("dual-runs")
    train(tiny_config(), root / "gpt")
    train(tiny_config("model.kind=mamba", "model.d_state=4"), root / "mamba")
    return root


def test_cli_on_random_inputs_writes_the_json(tmp_path, capsys):
    code, out, err = run_cli(
        ["analyze", "dual", "--m", "16,256", "--seeds", "4", "--out", tmp_path], capsys
    )
    assert code == 0, err
    result = json.loads((tmp_path / "analysis" / "dual.json").read_text())
    assert result["source"] == "random inputs" and result["ms"] == [16, 256]
    assert max(result["dual_vs_rf"]) < 1e-10 and result["slope"] < 0
    assert (tmp_path / "analysis" / "dual.png").stat().st_size > 0
    assert "slope:" in out and out.count("e-") >= 2  # the table's dual gaps
    code, _, err = run_cli(["analyze", "dual", "--m", "16,x"], capsys)
    assert code == 2 and err.strip().startswith("error: --m:")


def test_cli_on_a_trained_gpt_head(tiny_runs, capsys):
    run_dir = tiny_runs / "gpt"
    args = ["analyze", "dual", run_dir, "--layer", "0", "--head", "1", "--m", "16,64"]
    code, out, err = run_cli([*args, "--seeds", "3"], capsys)
    assert "slope:" in out
    assert code == 0, err
    result = json.loads((run_dir / "analysis" / "dual-layer0-head1.json").read_text())
    assert (result["layer"], result["head"], result["step"]) == (0, 1, 12)
    assert result["softmax_vs_layer"] < 1e-10  # the head's inputs were read right
    assert max(result["dual_vs_rf"]) < 1e-10 and len(result["queries"]) == 4
    assert (run_dir / "analysis" / "dual-layer0-head1.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("run", "option", "expected"),
    [
        ("gpt", ["--head", "2"], "--head: 2 is out of range (0..1)"),
        ("gpt", ["--layer", "1"], "--layer: 1 is out of range (0..0)"),
        ("mamba", [], "model.kind: "),
    ],
)
def test_cli_refuses_bad_heads_and_mamba_runs(tiny_runs, capsys, run, option, expected):
    code, _, err = run_cli(["analyze", "dual", tiny_runs / run, *option], capsys)
    assert code == 2
    assert one_line_error(err).startswith(expected)
