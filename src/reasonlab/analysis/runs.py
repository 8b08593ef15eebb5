"""Analysis of a trained run folder: load a checkpoint, run the logit lens or causal tracing on a
probe's queries, write JSON and a heatmap PNG under ``RUN_DIR/analysis/``. Never trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reasonlab.analysis.logit_lens import first_top1_layer, logit_lens
from reasonlab.analysis.patching import HOOKS, patch_grid
from reasonlab.analysis.plots import heatmap, lines
from reasonlab.analysis.twohop_queries import (
    counterfactual_chains,
    position_labels,
    query_tensors,
)
from reasonlab.config import ConfigError, RunConfig, TwoHopTaskConfig
from reasonlab.models.build import build_model
from reasonlab.runs import RunDir, load_checkpoint_file, write_json
from reasonlab.tasks.twohop import Chains, Vocabulary, build_splits, probe_chains


def select_steps(run: RunDir, checkpoint: str) -> list[int]:
    """'last', 'all' or a step number -> checkpoint steps that exist."""
    steps = run.checkpoint_steps()
    if not steps:
        raise ConfigError(f"{run.checkpoint_dir}: no checkpoint to analyze")
    if checkpoint == "last":
        return steps[-1:]
    if checkpoint == "all":
        return steps
    if not checkpoint.isdigit() or int(checkpoint) not in steps:
        raise ConfigError(f"--checkpoint: {checkpoint!r} is not one of last, all, {steps}")
    return [int(checkpoint)]


def load_model(
    run: RunDir, config: RunConfig, vocab_size: int, seq_len: int, step: int
) -> nn.Module:
    """The model of checkpoint ``step``; learned position tables fix the length they were
    trained with, which wins over ``seq_len``."""
    path = run.checkpoint_path(step)
    tensors, _ = load_checkpoint_file(path)
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    if "pos_embed.weight" in state:
        seq_len = state["pos_embed.weight"].shape[0]
    model = build_model(config.model, vocab_size, seq_len)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ConfigError(f"{path}: does not fit the model of {run.config_path}") from None
    return model.eval()


class TwoHopRun:
    """A two-hop run folder with its graph, its probes' chains and its vocabulary."""

    def __init__(self, run_dir: str | Path):
        self.run = RunDir(run_dir)
        self.config = self.run.load_config()
        task = self.config.task
        if not isinstance(task, TwoHopTaskConfig):
            raise ConfigError(f"{self.run.config_path}: analysis needs a two-hop task")
        if task.data_dir is not None:
            raise ConfigError(
                "task.data_dir: analysis rebuilds the graph, so it needs a generated task"
            )
        self.task = task
        self.splits = build_splits(task)
        self.chains = probe_chains(self.splits, task)
        self.vocab = Vocabulary(task.num_entities, task.num_relations)
        self.seq_len = self.config.model.max_seq_len or _task_seq_len(task)

    def queries(self, probe: str, n: int, seed: int = 0) -> Chains:
        if probe not in self.chains:
            raise ConfigError(f"--probe: {probe!r} is not one of {', '.join(self.chains)}")
        chains = self.chains[probe]
        if chains.hops != 2:
            raise ConfigError(f"--probe: {probe} is not a two-hop probe")
        if len(chains) > n:
            chains = chains.take(
                np.sort(np.random.default_rng(seed).choice(len(chains), n, replace=False))
            )
        return chains

    def model(self, step: int) -> nn.Module:
        return load_model(self.run, self.config, len(self.vocab.tokens), self.seq_len, step)

    @property
    def out_dir(self) -> Path:
        path = self.run.path / "analysis"
        path.mkdir(exist_ok=True)
        return path


def _task_seq_len(task: TwoHopTaskConfig) -> int:
    from reasonlab.tasks.twohop import layout

    hops = [1, 2, *task.khop]
    return max(layout(k, task.cot).length for k in hops)


def run_logit_lens(
    run_dir: str | Path,
    probe: str = "test_inferred_ood",
    target: str = "bridge",
    checkpoint: str = "last",
    n_queries: int = 300,
) -> dict[str, Any]:
    subject = TwoHopRun(run_dir)
    chains = subject.queries(probe, n_queries)
    tokens, target_ids, read = query_tensors(chains, subject.task.cot, subject.vocab, target)
    labels = position_labels(subject.task.cot, read)
    results = []
    for step in select_steps(subject.run, checkpoint):
        lens = logit_lens(subject.model(step), tokens, target_ids)
        top1_at_read = lens.top1()[:, read].tolist()
        results.append(
            {
                "step": step,
                "mrr": lens.mrr().tolist(),
                "mean_rank": lens.mean_rank().tolist(),
                "top1": lens.top1().tolist(),
                "top1_at_read": top1_at_read,
                "mrr_at_read": lens.mrr()[:, read].tolist(),
                "first_top1_layer": first_top1_layer(top1_at_read),
            }
        )
    layers = _layer_labels(len(results[0]["mrr"]), "resid")
    output = {
        "run": str(subject.run.path),
        "analysis": "logit_lens",
        "probe": probe,
        "target": target,
        "cot": subject.task.cot,
        "queries": len(chains),
        "read_position": read,
        "positions": labels,
        "layers": layers,
        "layer_note": "layer 0 = embeddings, layer i = after block i; first_top1_layer is "
        "the first layer where >= half the queries rank the target first",
        "checkpoints": results,
    }
    stem = subject.out_dir / f"logit-lens-{probe}-{target}"
    write_json(stem.with_suffix(".json"), output)
    last = results[-1]
    heatmap(
        np.array(last["mrr"]),
        layers,
        labels,
        f"logit lens: MRR of the {target} ({probe}, step {last['step']})",
        stem.with_suffix(".png"),
        read_position=read,
    )
    if len(results) > 1:
        lines(
            {f"step {r['step']}": r["mrr_at_read"] for r in results},
            layers,
            f"MRR of the {target} at position {labels[read]} over training",
            stem.with_name(stem.name + "-over-training.png"),
        )
    return output


def run_trace(
    run_dir: str | Path,
    probe: str = "test_inferred_ood",
    change: str = "bridge",
    target: str = "tail",
    hook: str = "resid",
    checkpoint: str = "last",
    n_queries: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    if hook not in HOOKS:
        raise ConfigError(f"--hook: {hook!r} is not one of {', '.join(HOOKS)}")
    subject = TwoHopRun(run_dir)
    cot = subject.task.cot
    if change == "bridge" and cot == "none":
        raise ConfigError(
            "--change: bridge needs a CoT run (the bridge is not written without CoT)"
        )
    chains = subject.queries(probe, n_queries)
    clean, counterfactual = counterfactual_chains(
        subject.splits.graph,
        subject.task.num_relations,
        chains,
        change,
        target,
        np.random.default_rng(seed),
    )
    if len(clean) == 0:
        raise ConfigError(f"--change: no valid counterfactual for {probe}")
    clean_tokens, clean_target, read = query_tensors(clean, cot, subject.vocab, target)
    corrupt_tokens, corrupt_target, _ = query_tensors(counterfactual, cot, subject.vocab, target)
    labels = position_labels(cot, read)
    results = []
    for step in select_steps(subject.run, checkpoint):
        grid = patch_grid(
            subject.model(step),
            clean_tokens,
            corrupt_tokens,
            clean_target,
            corrupt_target,
            read,
            hook=hook,
        )
        results.append(
            {
                "step": step,
                "clean_top1": grid.clean_top1,
                "corrupt_top1": grid.corrupt_top1,
                "top1": _rows(grid.top1),
                "rank": _rows(grid.rank),
                "prob": _rows(grid.prob),
                "logit_diff": _rows(grid.logit_diff),
            }
        )
    layers = _layer_labels(len(results[0]["top1"]), hook)
    output = {
        "run": str(subject.run.path),
        "analysis": "causal_trace",
        "probe": probe,
        "change": change,
        "target": target,
        "hook": hook,
        "cot": cot,
        "queries": len(clean),
        "read_position": read,
        "positions": labels,
        "layers": layers,
        "grid_note": "top1[layer][position]: share of queries still answering the clean "
        "target after patching that activation from the counterfactual",
        "checkpoints": results,
    }
    stem = subject.out_dir / f"trace-{probe}-{change}-{target}-{hook}"
    write_json(stem.with_suffix(".json"), output)
    last = results[-1]
    heatmap(
        np.array(last["top1"]),
        layers,
        labels,
        f"patch {hook} from counterfactual {change}: clean {target} still top-1\n"
        f"({probe}, step {last['step']}, {len(clean)} queries)",
        stem.with_suffix(".png"),
        read_position=read,
        vmin=0.0,
        vmax=1.0,
        cmap="RdBu",
    )
    return output


def _layer_labels(rows: int, hook: str) -> list[str]:
    """Row labels: 'embed', 'L1', ... for the residual stream; 'L1', ... per block otherwise."""
    if hook == "resid":
        return ["embed", *(f"L{i}" for i in range(1, rows))]
    return [f"L{i}" for i in range(1, rows + 1)]


def _rows(grid: torch.Tensor) -> list[list[float | None]]:
    return [[None if np.isnan(v) else round(float(v), 5) for v in row] for row in grid.tolist()]
