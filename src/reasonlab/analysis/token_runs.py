"""The logit lens and causal tracing on the run of any token task that is not a generated two-hop
task (``analysis/runs.py`` has that one, with its graph): COPY, DP, a two-hop dataset folder.

Queries are a probe's rows fed with their true tokens; what is read is chosen by ``--target``
(``analysis/token_queries.py``): ``scored`` (the lens's default) reads, at every layer and
position, the rank of the token the model should write next, wherever that token is scored;
``first`` (tracing's default) or a stage of the probe (COPY ``first`` / ``last``, DP ``answer``)
reads one token per row at the position before it. Tracing's counterfactual of a row is another
row of the same probe whose target sits at the same position and differs (``--change row``, the
only change a task without a graph offers). A run of a vector task (in-context regression) is
refused: it has no tokens to read.

Files and JSON keys follow ``analysis/runs.py`` (``logit-lens-PROBE-TARGET-stepN``,
``trace-PROBE-row-TARGET-HOOK-stepN``, ``...-over-training`` for ``--checkpoint all``), with
``task`` naming the task kind; a one-token target records its ``read_position``, ``scored`` its
``read_positions`` and, per layer, the share of every scored token ranked first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasonlab.analysis.logit_lens import first_top1_layer, logit_lens
from reasonlab.analysis.run_folder import (
    AnalysedRun,
    grid_rows,
    layer_labels,
    select_steps,
    trace_steps,
    write_trace_over_training,
)
from reasonlab.analysis.token_queries import (
    EVERY_SCORED,
    FIRST_SCORED,
    aligned_rows,
    counterfactual_rows,
    position_labels,
    sample_rows,
    scored_targets,
    target_names,
)
from reasonlab.config import ConfigError
from reasonlab.core.files import write_json
from reasonlab.reporting.plots import heatmap, lines
from reasonlab.runs.folder import RunDir, check_data_fingerprint
from reasonlab.tasks import build_task
from reasonlab.tasks.base import Probe, TaskData

CHANGE = "row"  # the one counterfactual of a task without a graph: another row of the probe


class TokenRun(AnalysedRun):
    """A token task's run folder with its rebuilt probes. Building one rebuilds the task once
    and refuses data that differs from what the run was trained on (unless
    ``allow_data_change``; ``data_note`` then says so), and refuses a task of vectors."""

    def __init__(self, run_dir: str | Path, allow_data_change: bool = False):
        self.run = RunDir(run_dir)
        self.config = self.run.load_config()
        kind = self.config.task.kind
        data = build_task(self.config.task)
        if not isinstance(data, TaskData):
            raise ConfigError(
                f"{self.run.config_path}: task.kind {kind}: the logit lens and causal tracing "
                "need a token task (this task's inputs and outputs are vectors, not tokens)"
            )
        self.data_note = check_data_fingerprint(self.run, data.fingerprint(), allow_data_change)
        self.data = data
        self.vocab_size, self.seq_len = data.vocab_size, data.max_seq_len

    def probe(self, name: str | None) -> tuple[str, Probe]:
        """The probe named (default: ``test_inferred_ood`` where the task has it, as on a
        generated two-hop run, else the task's first probe) and its name."""
        probes = self.data.probes
        name = name or (
            "test_inferred_ood" if "test_inferred_ood" in probes else next(iter(probes))
        )
        if name not in self.data.probes:
            raise ConfigError(f"--probe: {name!r} is not one of {', '.join(self.data.probes)}")
        return name, self.data.probes[name]


def _target(target: str | None, probe: Probe, name: str, lens: bool) -> str:
    target = target or (EVERY_SCORED if lens else FIRST_SCORED)
    known = target_names(probe, lens)
    if target not in known:
        raise ConfigError(f"--target: {target!r} is not one of {', '.join(known)} for {name}")
    return target


def _common(subject: TokenRun, probe_name: str, target: str) -> dict[str, Any]:
    return {
        "run": str(subject.run.path),
        "task": subject.config.task.kind,
        "probe": probe_name,
        "target": target,
    }


def token_logit_lens(
    subject: TokenRun,
    probe: str | None,
    target: str | None,
    checkpoint: str,
    n_queries: int,
) -> dict[str, Any]:
    """``run_logit_lens`` on a token task's run (module docstring)."""
    with subject.run.lock():
        name, rows_of = subject.probe(probe)
        target = _target(target, rows_of, name, lens=True)
        steps = select_steps(subject.run, checkpoint)
        if target == EVERY_SCORED:
            rows = sample_rows(torch.arange(len(rows_of)), n_queries)
            tokens, following, read_mask, read = scored_targets(rows_of, rows)
            goal: torch.Tensor = following
        else:
            pool, position = aligned_rows(rows_of, target)
            rows = sample_rows(pool, n_queries)
            tokens = rows_of.tokens[rows, :position]  # read at position - 1
            goal = rows_of.tokens[rows, position]
            read, read_mask = list(range(position)), None
        labels = position_labels(tokens, subject.data.vocab, read)
        results = []
        for step in steps:
            lens = logit_lens(subject.model(step), tokens, goal)
            results.append(_lens_entry(step, lens.rank, read, read_mask))
        layers = layer_labels(len(results[0]["mrr"]), "resid")
        where = (
            {"read_positions": read}
            if read_mask is not None
            else {"read_position": len(read) - 1, "position_index": read}
        )
        output = {
            **_common(subject, name, target),
            "analysis": "logit_lens",
            "queries": len(rows),
            **where,
            "positions": labels,
            "layers": layers,
            "layer_note": "layer 0 = embeddings, layer i = after block i; each position is read "
            "for the token at the next position; first_top1_layer is the first layer where >= "
            "half the targets read rank first",
            **({"data_note": subject.data_note} if subject.data_note else {}),
            "checkpoints": results,
        }
        what = "every scored token" if read_mask is not None else f"the {target} token"
        files = _write(
            subject,
            f"logit-lens-{name}-{target}",
            output,
            lambda entry: np.array(entry["mrr"], dtype=float),
            f"logit lens: MRR of {what} ({name}",
            len(rows),
            read_position=None if read_mask is not None else len(read) - 1,
        )
        if checkpoint == "all":
            stem = subject.out_dir / f"logit-lens-{name}-{target}-over-training"
            write_json(stem.with_suffix(".json"), output)
            lines(
                {f"step {r['step']}": r["mrr_at_read"] for r in results},
                layers,
                f"logit lens: MRR of {what} over training ({name}, {len(rows)} queries)",
                stem.with_suffix(".png"),
            )
            files += [stem.with_suffix(".json"), stem.with_suffix(".png")]
    return {**output, "files": [str(path) for path in files]}


def _lens_entry(
    step: int, rank: torch.Tensor, read: list[int], read_mask: torch.Tensor | None
) -> dict[str, Any]:
    """One checkpoint's lens: (layers x read positions) grids, and per layer the share of the
    targets read that rank first (for ``scored``, every scored token of every row)."""
    rank = rank.float()[:, :, read]  # (layers, N, positions)
    weight = torch.ones(rank.shape[1:]) if read_mask is None else read_mask[:, read].float()
    counts = weight.sum(0)  # (positions,)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weight).sum(1) / counts  # NaN where nothing is read

    top1, reciprocal = (rank == 0).float(), 1.0 / (rank + 1.0)
    if read_mask is None:
        top1_at_read, mrr_at_read = mean(top1)[:, -1], mean(reciprocal)[:, -1]
    else:  # every scored token counts once
        top1_at_read = (top1 * weight).sum((1, 2)) / weight.sum()
        mrr_at_read = (reciprocal * weight).sum((1, 2)) / weight.sum()
    return {
        "step": step,
        "mrr": grid_rows(mean(reciprocal)),
        "mean_rank": grid_rows(mean(rank)),
        "top1": grid_rows(mean(top1)),
        "top1_at_read": top1_at_read.tolist(),
        "mrr_at_read": mrr_at_read.tolist(),
        "first_top1_layer": first_top1_layer(top1_at_read.tolist()),
    }


def token_trace(
    subject: TokenRun,
    probe: str | None,
    change: str | None,
    target: str | None,
    hook: str,
    checkpoint: str,
    n_queries: int,
    seed: int,
) -> dict[str, Any]:
    """``run_trace`` on a token task's run (module docstring); the hook is already checked."""
    kind = subject.config.task.kind
    if change not in (None, CHANGE):
        raise ConfigError(
            f"--change: on a {kind} run the counterfactual is another row of the probe "
            f"(--change {CHANGE}), not {change!r}"
        )
    with subject.run.lock():
        name, rows_of = subject.probe(probe)
        target = _target(target, rows_of, name, lens=False)
        steps = select_steps(subject.run, checkpoint)
        pool, position = aligned_rows(rows_of, target)
        clean, partner = counterfactual_rows(
            rows_of.tokens,
            sample_rows(pool, n_queries, seed),
            pool,
            position,
            np.random.default_rng(seed),
        )
        if len(clean) == 0:
            raise ConfigError(
                f"--target: every row of {name} has the same {target} token, so no "
                "counterfactual changes it; choose another --target"
            )
        read = position - 1
        clean_tokens = rows_of.tokens[clean, :position]
        corrupt_tokens = rows_of.tokens[partner, :position]
        clean_target, corrupt_target = (
            rows_of.tokens[clean, position],
            rows_of.tokens[partner, position],
        )
        labels = position_labels(clean_tokens, subject.data.vocab, list(range(position)))
        results = trace_steps(
            subject,
            steps,
            (clean_tokens, corrupt_tokens),
            (clean_target, corrupt_target),
            read,
            hook,
        )
        output = {
            **_common(subject, name, target),
            "analysis": "causal_trace",
            "change": CHANGE,
            "hook": hook,
            "queries": len(clean),
            "read_position": read,
            "positions": labels,
            "layers": layer_labels(len(results[0]["top1"]), hook),
            "grid_note": "top1[layer][position]: share of queries still answering the clean "
            "target after patching that activation from another row of the probe",
            **({"data_note": subject.data_note} if subject.data_note else {}),
            "checkpoints": results,
        }
        stem_name = f"trace-{name}-{CHANGE}-{target}-{hook}"
        what = f"patch {hook} from another row: clean {target} token still top-1"
        files = _write(
            subject,
            stem_name,
            output,
            lambda entry: np.array(entry["top1"], dtype=float),
            f"{what} ({name}",
            len(clean),
            read_position=read,
            cmap="RdBu",
        )
        if checkpoint == "all":
            title = f"{what}, over training ({name}, {len(clean)} queries)"
            stem = subject.out_dir / f"{stem_name}-over-training"
            files += write_trace_over_training(stem, output, labels, title)
    return {**output, "files": [str(path) for path in files]}


def _write(
    subject: TokenRun,
    name: str,
    output: dict[str, Any],
    grid: Any,
    title: str,
    queries: int,
    read_position: int | None,
    cmap: str = "viridis",
) -> list[Path]:
    """One JSON + heatmap per checkpoint (``NAME-stepN``); returns the paths written."""
    files = []
    for entry in output["checkpoints"]:
        stem = subject.out_dir / f"{name}-step{entry['step']}"
        write_json(stem.with_suffix(".json"), {**output, "checkpoints": [entry]})
        heatmap(
            grid(entry),
            output["layers"],
            output["positions"],
            f"{title}, step {entry['step']}, {queries} queries)",
            stem.with_suffix(".png"),
            read_position=read_position,
            cmap=cmap,
        )
        files += [stem.with_suffix(".json"), stem.with_suffix(".png")]
    return files
