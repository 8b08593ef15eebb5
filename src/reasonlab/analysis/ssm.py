"""Decay probe: what a trained Mamba's selective scan does between a copied token and the
position that writes its copy (arXiv 2410.03810, Theorem 1).

Written as linear attention with decay, one Mamba channel d gives at position i

    y_i[d] = sum_{j <= i} sum_n C_i[n] alpha_{j,i}[d, n] B_j[n] delta_j[d] u_j[d],
    alpha_{j,i}[d, n] = prod_{k = j+1}^{i} exp(delta_k[d] A[d, n]),

so the token at j reaches position i through the score c_i . b_j scaled by the cumulative decay
alpha_{j,i} <= 1. The theorem: a constant-size Mamba copying from distance L needs scores growing
like (1 / a)^(L - 1) for per-step decays a < 1, where a Transformer needs about log L.

For a COPY probe, the copy of the source token at position j is predicted at position i = (its
place in the copy) - 1. Per layer and per distance i - j, ``decay_profile`` reports medians over
the probe's (row, copied token) pairs of:

- ``log10_alpha_max``: log10 of max over (channel, state) of alpha_{j,i}, the decay of the most
  persistent channel (0 = nothing lost);
- ``log10_cb``: log10 |c_i . b_j|, the score before decay;
- ``log10_score``: log10 of max over channels of |sum_n C_i[n] alpha_{j,i}[d, n] B_j[n] delta_j[d]|,
  how strongly position j's input reaches position i in the channel that carries it best;
- ``log10_required``: log10 (1 / a)^(i - j) with a the layer's median per-step decay of its most
  persistent channel, the growth of c . b the theorem says is needed to keep that decay from
  drowning the score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reasonlab.config import ConfigError, CopyTaskConfig, MambaModelConfig
from reasonlab.core.files import write_json
from reasonlab.models.mamba import Mamba
from reasonlab.runs.folder import RunDir, check_data_fingerprint

TINY = 1e-30  # floor before a log10, so that an exact 0 gives -30 instead of -inf


def _mixer_inputs(model: Mamba, tokens: Tensor) -> list[dict[str, Tensor]]:
    """Each layer's delta (N, L, d), B and C (N, L, n) of the model run on ``tokens``."""
    names = [
        f"blocks.{i}.mixer.hook_{kind}"
        for i in range(model.cfg.n_layers)
        for kind in ("delta", "B", "C")
    ]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return [
        {kind: cache[f"blocks.{i}.mixer.hook_{kind}"].double() for kind in ("delta", "B", "C")}
        for i in range(model.cfg.n_layers)
    ]


PairValues = dict[str, Tensor]  # per (row, copied token) pair, and the per-step decays


@torch.no_grad()
def pair_values(model: Mamba, tokens: Tensor, query: Tensor, source: Tensor) -> list[PairValues]:
    """Per layer, for every (row, copied token) pair: ``distance``, ``log10_alpha_max``,
    ``log10_cb``, ``log10_score`` (P,), and ``step_decay`` (the best channel's decay at every
    position of every row). tokens (N, L); query and source (N, K): each row's K copied tokens'
    predicting positions and source positions (query > source)."""
    if (query <= source).any():
        raise ValueError("every query position must come after its source position")
    model.eval()
    rows = torch.arange(tokens.shape[0])[:, None].expand_as(query)
    distance = (query - source).reshape(-1)
    layers = []
    for index, inputs in enumerate(_mixer_inputs(model, tokens)):
        A = -torch.exp(model.blocks[index].mixer.A_log.double())  # (d, n)
        delta, B, C = inputs["delta"], inputs["B"], inputs["C"]
        summed = delta.cumsum(1)  # (N, L, d): sum of delta up to each position
        # log alpha_{j,i}[d, n] = A[d, n] * (sum_{k <= i} delta_k - sum_{k <= j} delta_k)
        span = (summed[rows, query] - summed[rows, source]).reshape(-1, A.shape[0])  # (P, d)
        log_alpha = span[:, :, None] * A  # (P, d, n), natural log
        C_i = C[rows, query].reshape(-1, A.shape[1])  # (P, n)
        B_j = B[rows, source].reshape(-1, A.shape[1])
        delta_j = delta[rows, source].reshape(-1, A.shape[0])  # (P, d)
        cb = (C_i * B_j).sum(-1)  # (P,)
        weighted = torch.einsum("pn,pdn,pn->pd", C_i, log_alpha.exp(), B_j) * delta_j
        layers.append(
            {
                "distance": distance,
                "log10_alpha_max": log_alpha.amax((1, 2)) / math.log(10.0),
                "log10_cb": cb.abs().clamp_min(TINY).log10(),
                "log10_score": weighted.abs().amax(1).clamp_min(TINY).log10(),
                "step_decay": (delta[..., None] * A).amax((-1, -2)).exp().reshape(-1),
            }
        )
    return layers


def summarize(parts: list[list[PairValues]]) -> list[dict[str, Any]]:
    """Per layer, medians by distance of the pairs of several ``pair_values`` calls (probes of
    different lengths), and the theorem's needed growth from the median per-step decay."""
    layers = []
    for index in range(len(parts[0])):
        merged = {key: torch.cat([part[index][key] for part in parts]) for key in parts[0][index]}
        distance = merged["distance"]
        distances = sorted(set(distance.tolist()))
        a = float(merged["step_decay"].median())
        entry: dict[str, Any] = {"layer": index, "step_decay_median": a, "distances": distances}
        for key in ("log10_alpha_max", "log10_cb", "log10_score"):
            entry[key] = [float(merged[key][distance == k].median()) for k in distances]
        entry["log10_required"] = [-k * math.log10(a) if a > 0 else None for k in distances]
        entry["pairs"] = int(distance.numel())
        layers.append(entry)
    return layers


def decay_profile(
    model: Mamba, tokens: Tensor, query: Tensor, source: Tensor
) -> list[dict[str, Any]]:
    """Per layer, the quantities of the module docstring by distance, for one set of pairs."""
    return summarize([pair_values(model, tokens, query, source)])


def run_decay(
    run_dir: str | Path,
    checkpoint: str = "last",
    probe: str | None = None,
    rows: int = 200,
    allow_data_change: bool = False,
) -> dict[str, Any]:
    """The decay probe on a Mamba run trained on COPY: ``decay-PROBE-stepN.json`` and ``.png``
    in RUN_DIR/analysis for each checkpoint asked for (``last``, ``all`` or a step). ``probe``:
    one ``len{n}`` probe, or None for all of them (``decay-all-stepN``; in plain COPY every
    copied token of a length-n string sits at distance n, so the lengths give the curve);
    ``rows``: each probe's first rows taken."""
    from reasonlab.analysis.run_folder import select_steps
    from reasonlab.reporting.plots import decay_panels
    from reasonlab.tasks import build_task
    from reasonlab.tasks.copy import copy_positions, source_positions

    run = RunDir(run_dir)
    config = run.load_config()
    if not isinstance(config.task, CopyTaskConfig):
        raise ConfigError(f"{run.config_path}: the decay probe needs a COPY run (task.kind copy)")
    if not isinstance(config.model, MambaModelConfig):
        raise ConfigError(f"{run.config_path}: the decay probe needs a Mamba (model.kind mamba)")
    with run.lock():
        data = build_task(config.task)
        data_note = check_data_fingerprint(run, data.fingerprint(), allow_data_change)
        names = sorted(data.probes, key=lambda name: int(name.removeprefix("len")))
        if probe is not None and probe not in data.probes:
            raise ConfigError(f"--probe: {probe!r} is not one of {', '.join(names)}")
        chosen = [probe] if probe is not None else names
        inputs = []
        for name in chosen:
            take = slice(0, min(rows, len(data.probes[name])))
            tokens = data.probes[name].tokens[take]
            query = copy_positions(data.probes[name])[take] - 1  # the position writing the copy
            source = source_positions(data.probes[name], data.vocab)[take]
            inputs.append((tokens, query, source))
        out_dir = run.path / "analysis"
        out_dir.mkdir(exist_ok=True)
        label = probe or "all"
        results = []
        for step in select_steps(run, checkpoint):
            model = run.load_model(step, config)
            layers = summarize([pair_values(model, *args) for args in inputs])  # type: ignore[arg-type]
            result = {
                "probes": chosen,
                "step": step,
                "rows_per_probe": rows,
                "layers": layers,
                "data_note": data_note,
                "note": "per layer, medians by distance i - j over (row, copied token) pairs "
                "(reasonlab.analysis.ssm): log10 |c_i . b_j|, log10 of the most persistent "
                "channel's alpha_{j,i}, log10 of the best channel's weight, and "
                "log10 (1/a)^(i - j), the c . b growth Theorem 1 needs",
            }
            stem = out_dir / f"decay-{label}-step{step}"
            write_json(stem.with_suffix(".json"), result)
            title = f"{run.path.name}: decay probe, {label}, step {step}"
            decay_panels(layers, title, stem.with_suffix(".png"))
            results.append(result)
    return {"probe": label, "checkpoints": results}
