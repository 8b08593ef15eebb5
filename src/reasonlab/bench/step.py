"""Speed benchmarks against real peers in the same process.

``step_time``: one training step (forward, completion loss, backward, AdamW) of reasonlab's GPT
against Hugging Face ``GPT2LMHeadModel`` of the same shape (when ``transformers`` is installed),
same batch, same threads; median over repeats after warm-up.

``mamba_step_time``: the same for reasonlab's Mamba against mambapy's Mamba (with an embedding,
final RMSNorm and head around it) and Hugging Face ``MambaForCausalLM`` of the same shape, and
reasonlab's GPT of the same depth and width for scale.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.config import ConfigError, GPTModelConfig, MambaModelConfig
from reasonlab.models.build import build_model
from reasonlab.models.gpt import GPT, GPTConfig
from reasonlab.training.loop import fused_adamw
from reasonlab.training.precision import auto_uses_bf16, autocast_context, cpu_has_bf16_units


def _stepper(
    model: nn.Module,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    bf16: bool = False,
) -> Callable[[], float]:
    """A function that runs one training step (forward, cross-entropy in fp32, backward, AdamW;
    under bf16 autocast when ``bf16``, fp32 weights as in a run) and returns its seconds."""
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, fused=fused_adamw(params))  # as a run
    device = params[0].device

    def step() -> float:
        _sync(device)
        started = time.perf_counter()
        with autocast_context(device, bf16):
            logits = logits_of(tokens[:, :-1])
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)  # CUDA runs asynchronously: the step ends when its kernels have
        return time.perf_counter() - started

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_device(name: str) -> torch.device:
    """The device a benchmark runs on: cpu, cuda or cuda:N (a missing GPU is a ConfigError)."""
    if name != "cpu" and not (name == "cuda" or name.startswith("cuda:")):
        raise ConfigError(f"--device: {name!r} is not cpu, cuda or cuda:N")
    if name != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"--device: {name} asked for, but torch sees no CUDA GPU here")
    return torch.device(name)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _device_facts(device: torch.device) -> dict[str, Any]:
    facts = {"device": _device_name(device)}
    if device.type == "cpu":
        facts["cpu_bf16_units"] = cpu_has_bf16_units()
    return {**facts, "auto_precision": "bf16" if auto_uses_bf16(device) else "fp32"}


def _time_steps(
    model: nn.Module,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    repeats: int,
    warmup: int,
) -> list[float]:
    step = _stepper(model, logits_of, tokens)
    return [step() for _ in range(warmup + repeats)][warmup:]


def matmul_rate(
    dtype: torch.dtype,
    size: int = 1024,
    seconds: float = 0.5,
    device: torch.device = torch.device("cpu"),
) -> float:
    """Achieved GFLOP/s of a (size x size) @ (size x size) matmul in ``dtype`` on ``device``
    (the CPU with torch's threads): the median of repeats filling about ``seconds`` after one
    warm-up."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    _sync(device)
    started = time.perf_counter()
    a @ b
    _sync(device)
    once = max(time.perf_counter() - started, 1e-6)
    times = []
    for _ in range(max(3, min(50, int(seconds / once)))):
        started = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def gpt_step_flops(
    n_layers: int, d_model: int, vocab_size: int, batch_size: int, seq_len: int
) -> float:
    """Floating-point operations of one training step of a GPT (MLP 4 x width) on sequences of
    ``seq_len`` tokens (``seq_len - 1`` inputs): matmuls only, backward = 2 x forward. Per token
    and layer 24 d^2 (QKV 6, output 2, MLP 16) and 4 t d for scores and values over the t keys a
    causal query sees (t/2 on average), and 2 d V for the unembedding."""
    tokens = batch_size * (seq_len - 1)
    mean_keys = seq_len / 2
    per_token = n_layers * (24 * d_model**2 + 4 * mean_keys * d_model) + 2 * d_model * vocab_size
    return 3.0 * tokens * per_token


def _hf_gpt2(n_layers: int, d_model: int, n_heads: int, vocab_size: int, seq_len: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=seq_len,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )
    return GPT2LMHeadModel(config)


def step_time(
    n_layers: int = 4,
    d_model: int = 128,
    n_heads: int = 4,
    vocab_size: int = 222,
    batch_size: int = 512,
    seq_len: int = 5,
    repeats: int = 20,
    warmup: int = 3,
    precisions: Sequence[str] = ("fp32",),
    device: str = "cpu",
) -> dict[str, Any]:
    """Milliseconds per training step of reasonlab's GPT and Hugging Face's GPT-2 of the same
    shape on the same batch, in each of ``precisions`` (fp32; bf16 = bf16 autocast for both),
    the methods alternated step by step so that the machine's drift hits both alike; with the
    step's FLOPs, the machine's matmul rate in each precision and the utilization."""
    where = bench_device(device)
    torch.manual_seed(0)
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len), device=where)
    ours = GPT(
        GPTConfig(
            vocab_size=vocab_size,
            max_seq_len=seq_len,
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
        )
    ).to(where)
    flops = gpt_step_flops(n_layers, d_model, vocab_size, batch_size, seq_len)
    results: dict[str, Any] = {
        "shape": {
            "n_layers": n_layers,
            "d_model": d_model,
            "n_heads": n_heads,
            "vocab_size": vocab_size,
            "batch_size": batch_size,
            "seq_len": seq_len,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **_device_facts(where),
        "parameters": ours.num_parameters(),
        "step_gflop": round(flops / 1e9, 3),
    }
    models: dict[str, tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]] = {
        "reasonlab": (ours, ours)
    }
    try:
        hf = _hf_gpt2(n_layers, d_model, n_heads, vocab_size, seq_len).to(where)
    except ImportError:
        results["transformers"] = "not installed (pip install 'reasonlab[hf]')"
    else:
        models["transformers_gpt2"] = (hf, lambda x: hf(input_ids=x).logits)
    timings: dict[str, list[float]] = {}
    for precision in precisions:
        steppers = {
            f"{name}_{precision}": _stepper(model, logits_of, tokens, precision == "bf16")
            for name, (model, logits_of) in models.items()
        }
        for step in steppers.values():
            for _ in range(warmup):
                step()
        for _ in range(repeats):  # alternated, so that the machine's drift hits both alike
            for key, step in steppers.items():
                timings.setdefault(key, []).append(step())
    size = 4096 if where.type == "cuda" else 1024  # a product big enough to fill the device
    rates = {
        p: matmul_rate(torch.bfloat16 if p == "bf16" else torch.float32, size, device=where)
        for p in precisions
    }
    results["matmul_gflops"] = {p: round(r, 1) for p, r in rates.items()}
    results["median_ms"] = {k: round(1000 * statistics.median(v), 2) for k, v in timings.items()}
    results["min_ms"] = {k: round(1000 * min(v), 2) for k, v in timings.items()}
    results["achieved_gflops"] = {
        k: round(flops / statistics.median(v) / 1e9, 1) for k, v in timings.items()
    }
    results["utilization"] = {
        k: round(flops / statistics.median(v) / 1e9 / rates[k.rsplit("_", 1)[1]], 3)
        for k, v in timings.items()
    }
    for precision in precisions:
        ours_ms = results["median_ms"].get(f"reasonlab_{precision}")
        peer_ms = results["median_ms"].get(f"transformers_gpt2_{precision}")
        if ours_ms and peer_ms:
            results.setdefault("speedup_vs_transformers", {})[precision] = round(
                peer_ms / ours_ms, 2
            )
    return results


def format_step_table(result: dict[str, Any]) -> str:
    """A markdown table of ``step_time``'s result: per method and precision, median and min ms,
    achieved GFLOP/s and utilization of the machine's matmul rate in that precision."""
    shape = result["shape"]
    lines = [
        f"GPT {shape['n_layers']} x {shape['d_model']}, batch {shape['batch_size']} x "
        f"{shape['seq_len']}, {result['step_gflop']} GFLOP a step, on {result['device']} "
        f"({result['threads']} CPU threads); "
        f"matmul GFLOP/s: " + ", ".join(f"{p} {r}" for p, r in result["matmul_gflops"].items()),
        "",
        "| method | median ms | min ms | GFLOP/s | utilization |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, median in result["median_ms"].items():
        lines.append(
            f"| {key} | {median} | {result['min_ms'][key]} | {result['achieved_gflops'][key]} | "
            f"{result['utilization'][key]:.1%} |"
        )
    return "\n".join(lines)


class MambapyLM(nn.Module):
    """mambapy's Mamba blocks with an embedding, a final RMSNorm and an untied head: the same
    language model as reasonlab's Mamba of config ``cfg`` (a ``models.mamba.MambaConfig``),
    built from mambapy's parts (its own ``mambapy.lm`` imports mamba-ssm's Triton kernels, which
    a CPU machine lacks). Parameter names: ``embedding``, ``mamba.layers.{i}``, ``norm_f``,
    ``lm_head``."""

    def __init__(self, cfg: Any):
        super().__init__()
        from mambapy.mamba import Mamba, MambaConfig, RMSNorm

        config = MambaConfig(
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            dt_rank=cfg.dt_rank,
            d_state=cfg.d_state,
            expand_factor=cfg.expand,
            d_conv=cfg.d_conv,
            rms_norm_eps=cfg.norm_eps,
        )
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.mamba = Mamba(config)
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm_f(self.mamba(self.embedding(tokens))))


def mamba_step_time(
    n_layers: int = 2,
    d_model: int = 128,
    d_state: int = 16,
    expand: int = 2,
    vocab_size: int = 32,
    batch_size: int = 64,
    seq_len: int = 41,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
) -> dict[str, Any]:
    """Seconds per training step of a Mamba: reasonlab, mambapy, Hugging Face; and reasonlab's
    GPT of the same depth and width (4 heads), all on the same batch and device."""
    where = bench_device(device)
    torch.manual_seed(0)
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len), device=where)
    cfg = MambaModelConfig(n_layers=n_layers, d_model=d_model, d_state=d_state, expand=expand)
    ours = build_model(cfg, vocab_size, seq_len).to(where)
    gpt = build_model(
        GPTModelConfig(n_layers=n_layers, d_model=d_model, n_heads=4), vocab_size, seq_len
    ).to(where)
    results: dict[str, Any] = {
        "shape": {
            "n_layers": n_layers,
            "d_model": d_model,
            "d_state": d_state,
            "expand": expand,
            "vocab_size": vocab_size,
            "batch_size": batch_size,
            "seq_len": seq_len,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": _device_name(where),
        "parameters": {"reasonlab": ours.num_parameters(), "reasonlab_gpt": gpt.num_parameters()},
    }
    timings = {
        "reasonlab": _time_steps(ours, ours, tokens, repeats, warmup),
        "reasonlab_gpt": _time_steps(gpt, gpt, tokens, repeats, warmup),
    }
    try:
        peer = MambapyLM(ours.cfg).to(where)
    except ImportError:
        results["mambapy"] = "not installed (pip install 'reasonlab[mamba]')"
    else:
        results["parameters"]["mambapy"] = sum(p.numel() for p in peer.parameters())
        timings["mambapy"] = _time_steps(peer, peer, tokens, repeats, warmup)
    from reasonlab.interop.huggingface import to_hf_mamba

    try:
        hf = to_hf_mamba(ours).to(where).train()  # the same model under Hugging Face's names
    except ConfigError:
        results["transformers"] = "not installed (pip install 'reasonlab[hf]')"
    else:
        results["parameters"]["transformers_mamba"] = sum(p.numel() for p in hf.parameters())
        timings["transformers_mamba"] = _time_steps(
            hf, lambda x: hf(input_ids=x, use_cache=False).logits, tokens, repeats, warmup
        )
    results["median_ms"] = {k: round(1000 * statistics.median(v), 2) for k, v in timings.items()}
    results["min_ms"] = {k: round(1000 * min(v), 2) for k, v in timings.items()}
    return results
