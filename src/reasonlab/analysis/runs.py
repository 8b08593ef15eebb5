"""Analysis of a trained run folder: load a checkpoint, run the logit lens or causal tracing on a
probe's queries, write JSON and a heatmap PNG under ``RUN_DIR/analysis/``. Never trains.

``open_run`` sends a generated two-hop run to ``TwoHopRun`` (this module: chains of its graph,
bridge and tail targets, counterfactuals that change one part of a chain) and the run of any
other token task (COPY, DP, a two-hop dataset folder) to ``analysis/token_runs.py`` (a probe's
rows, the tokens they should write, another row as the counterfactual); a run of in-context
regression is refused with one line, as it has no tokens.

Output files are named for what was analysed and the checkpoint step, so that analyses of
different checkpoints all remain:

- ``logit-lens-PROBE-TARGET-stepN.json`` / ``.png``: one checkpoint (JSON ``checkpoints`` holds
  that one step);
- ``trace-PROBE-CHANGE-TARGET-HOOK-stepN.json`` / ``.png``: likewise for causal tracing;
- ``...-over-training.json`` / ``.png`` (same prefixes): written by ``--checkpoint all`` only,
  and rewritten by every such call, so the plot always matches its JSON, which lists the steps.

The run folder is locked while an analysis reads and writes it, so a folder being trained (or
analysed by another process) is refused. The task is rebuilt once per call and its fingerprint
compared with the one the run recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reasonlab.analysis.logit_lens import first_top1_layer, logit_lens
from reasonlab.analysis.run_folder import (
    AnalysedRun,
    check_hook,
    layer_labels,
    select_steps,
    trace_steps,
    write_trace_over_training,
)
from reasonlab.analysis.twohop_queries import (
    can_change,
    canonical,
    change_names,
    counterfactual_chains,
    position_labels,
    query_tensors,
    target_names,
)
from reasonlab.config import ConfigError, TwoHopTaskConfig
from reasonlab.core.files import write_json
from reasonlab.reporting.plots import heatmap, lines
from reasonlab.runs.folder import RunDir, check_data_fingerprint
from reasonlab.tasks import build_task
from reasonlab.tasks.twohop.encoding import Vocabulary
from reasonlab.tasks.twohop.generator import build_splits, probe_chains
from reasonlab.tasks.twohop.graph import Chains

if TYPE_CHECKING:
    from reasonlab.analysis.token_runs import TokenRun


class TwoHopRun(AnalysedRun):
    """A two-hop run folder with its graph, its probes' chains and its vocabulary. Building one
    rebuilds the task once and refuses data that differs from what the run was trained on
    (unless ``allow_data_change``; ``data_note`` then says so); reuse it for several analyses."""

    def __init__(self, run_dir: str | Path, allow_data_change: bool = False):
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
        data = build_task(task)  # the sequences as trained, for the fingerprint and their length
        self.data_note = check_data_fingerprint(self.run, data.fingerprint(), allow_data_change)
        self.splits = build_splits(task)
        self.chains = probe_chains(self.splits, task)
        self.vocab = Vocabulary(task.num_entities, task.num_relations)
        self.vocab_size = len(self.vocab.tokens)
        self.seq_len = data.max_seq_len

    def probes(self) -> list[str]:
        """The probes analysis takes: those whose chains have a bridge (two or more hops)."""
        return [name for name, chains in self.chains.items() if chains.hops >= 2]

    def queries(self, probe: str, n: int, seed: int = 0) -> Chains:
        accepted = self.probes()
        if probe not in accepted:
            why = f" ({probe} has no bridge: one hop)" if probe in self.chains else ""
            raise ConfigError(f"--probe: {probe!r} is not one of {', '.join(accepted)}{why}")
        chains = self.chains[probe]
        if len(chains) > n:
            chains = chains.take(
                np.sort(np.random.default_rng(seed).choice(len(chains), n, replace=False))
            )
        return chains


def open_run(
    run_dir: str | Path | AnalysedRun, allow_data_change: bool = False
) -> TwoHopRun | TokenRun:
    """The run as the logit lens and tracing take it: a generated two-hop run with its graph
    (``TwoHopRun``), any other token task's run with its probes (``TokenRun``); a run of a
    vector task is refused with one line."""
    from reasonlab.analysis.token_runs import TokenRun

    if isinstance(run_dir, TwoHopRun | TokenRun):
        return run_dir
    run = RunDir(run_dir)
    task = run.load_config().task
    if isinstance(task, TwoHopTaskConfig) and task.data_dir is None:
        return TwoHopRun(run_dir, allow_data_change)
    return TokenRun(run_dir, allow_data_change)


def _known_name(option: str, value: str, known: list[str], hops: int, probe: str) -> str:
    """The canonical name of ``value`` (``bridge`` = ``bridge1``), or a ConfigError listing the
    names ``option`` accepts for this probe."""
    name = canonical(value, hops)
    if name not in known:
        alias = " (bridge = bridge1)" if hops > 2 else ""
        raise ConfigError(
            f"{option}: {value!r} is not one of {', '.join(known)}{alias} for {probe}"
        )
    return name


def _target(target: str, chains: Chains, probe: str) -> str:
    """The canonical target name for this probe's chains, or a ConfigError listing the valid."""
    return _known_name("--target", target, target_names(chains.hops), chains.hops, probe)


def run_logit_lens(
    run_dir: str | Path | AnalysedRun,
    probe: str | None = None,
    target: str | None = None,
    checkpoint: str = "last",
    n_queries: int = 300,
    *,
    allow_data_change: bool = False,
) -> dict[str, Any]:
    """Logit lens of ``target`` on a probe's queries, at every layer and position; writes one
    JSON + heatmap per checkpoint and, for ``all``, the over-training pair. Returns the JSON
    content of every checkpoint plus ``files``, the paths written. On a generated two-hop run
    the target is a bridge or the tail (default: ``test_inferred_ood``, ``bridge``); on any
    other token task see ``analysis/token_runs.py``."""
    subject = open_run(run_dir, allow_data_change)
    if not isinstance(subject, TwoHopRun):
        from reasonlab.analysis.token_runs import token_logit_lens

        return token_logit_lens(subject, probe, target, checkpoint, n_queries)
    probe = probe or "test_inferred_ood"
    target = target or "bridge"
    with subject.run.lock():
        chains = subject.queries(probe, n_queries)
        target = _target(target, chains, probe)
        steps = select_steps(subject.run, checkpoint)
        tokens, target_ids, read = query_tensors(chains, subject.task.cot, subject.vocab, target)
        labels = position_labels(subject.task.cot, read, chains.hops)
        results = []
        for step in steps:
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
        layers = layer_labels(len(results[0]["mrr"]), "resid")
        output = {
            "run": str(subject.run.path),
            "analysis": "logit_lens",
            "probe": probe,
            "hops": chains.hops,
            "target": target,
            "cot": subject.task.cot,
            "queries": len(chains),
            "read_position": read,
            "positions": labels,
            "layers": layers,
            "layer_note": "layer 0 = embeddings, layer i = after block i; first_top1_layer is "
            "the first layer where >= half the queries rank the target first",
            **({"data_note": subject.data_note} if subject.data_note else {}),
            "checkpoints": results,
        }
        name = f"logit-lens-{probe}-{target}"
        files = []
        for entry in results:
            stem = subject.out_dir / f"{name}-step{entry['step']}"
            write_json(stem.with_suffix(".json"), {**output, "checkpoints": [entry]})
            heatmap(
                np.array(entry["mrr"]),
                layers,
                labels,
                f"logit lens: MRR of the {target} ({probe}, step {entry['step']}, "
                f"{len(chains)} queries)",
                stem.with_suffix(".png"),
                read_position=read,
            )
            files += [stem.with_suffix(".json"), stem.with_suffix(".png")]
        if checkpoint == "all":
            stem = subject.out_dir / f"{name}-over-training"
            write_json(stem.with_suffix(".json"), output)
            lines(
                {f"step {r['step']}": r["mrr_at_read"] for r in results},
                layers,
                f"logit lens: MRR of the {target} at position {labels[read]} over training "
                f"({probe}, {len(chains)} queries)",
                stem.with_suffix(".png"),
            )
            files += [stem.with_suffix(".json"), stem.with_suffix(".png")]
    return {**output, "files": [str(path) for path in files]}


def run_trace(
    run_dir: str | Path | AnalysedRun,
    probe: str | None = None,
    change: str | None = None,
    target: str | None = None,
    hook: str = "resid",
    checkpoint: str = "last",
    n_queries: int = 300,
    seed: int = 0,
    *,
    allow_data_change: bool = False,
) -> dict[str, Any]:
    """Causal tracing: patch ``hook`` at each layer x position from counterfactual queries that
    change one part (``change``) and read whether the clean ``target`` survives; files as in
    ``run_logit_lens``. On a generated two-hop run (two-hop and k-hop probes; default
    ``test_inferred_ood``, change ``bridge``, target ``tail``) a counterfactual changes one part
    of the chain; on any other token task it is another row of the probe
    (``analysis/token_runs.py``)."""
    subject = open_run(run_dir, allow_data_change)
    check_hook(subject, hook)
    if not isinstance(subject, TwoHopRun):
        from reasonlab.analysis.token_runs import token_trace

        return token_trace(subject, probe, change, target, hook, checkpoint, n_queries, seed)
    probe = probe or "test_inferred_ood"
    change = change or "bridge"
    target = target or "tail"
    cot = subject.task.cot
    with subject.run.lock():
        chains = subject.queries(probe, n_queries)
        target = _target(target, chains, probe)
        change = _change(change, target, chains, probe, cot)
        steps = select_steps(subject.run, checkpoint)
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
        corrupt_tokens, corrupt_target, _ = query_tensors(
            counterfactual, cot, subject.vocab, target
        )
        labels = position_labels(cot, read, chains.hops)
        results = trace_steps(
            subject,
            steps,
            (clean_tokens, corrupt_tokens),
            (clean_target, corrupt_target),
            read,
            hook,
        )
        layers = layer_labels(len(results[0]["top1"]), hook)
        output = {
            "run": str(subject.run.path),
            "analysis": "causal_trace",
            "probe": probe,
            "hops": chains.hops,
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
            **({"data_note": subject.data_note} if subject.data_note else {}),
            "checkpoints": results,
        }
        name = f"trace-{probe}-{change}-{target}-{hook}"
        what = f"patch {hook} from counterfactual {change}: clean {target} still top-1"
        files = []
        for entry in results:
            stem = subject.out_dir / f"{name}-step{entry['step']}"
            write_json(stem.with_suffix(".json"), {**output, "checkpoints": [entry]})
            heatmap(
                np.array(entry["top1"], dtype=float),
                layers,
                labels,
                f"{what} ({probe}, step {entry['step']}, {len(clean)} queries)",
                stem.with_suffix(".png"),
                read_position=read,
                vmin=0.0,
                vmax=1.0,
                cmap="RdBu",
            )
            files += [stem.with_suffix(".json"), stem.with_suffix(".png")]
        if checkpoint == "all":
            title = f"{what}, over training ({probe}, {len(clean)} queries)"
            stem = subject.out_dir / f"{name}-over-training"
            files += write_trace_over_training(stem, output, labels, title)
    return {**output, "files": [str(path) for path in files]}


def _change(change: str, target: str, chains: Chains, probe: str, cot: str) -> str:
    """The canonical part to change, or a ConfigError saying why it cannot be traced."""
    name = _known_name("--change", change, change_names(chains.hops), chains.hops, probe)
    if name.startswith("bridge") and cot == "none":
        raise ConfigError(
            f"--change: {change} needs a CoT run (the bridge is not written without CoT)"
        )
    if not can_change(name, target):
        raise ConfigError(
            f"--change: changing {name} cannot change the {target} (a change reaches only what "
            "comes after it in the chain); change an earlier part or choose a later --target"
        )
    return name
