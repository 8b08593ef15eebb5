"""Analysis step of the mamba-copy study: accuracy against copy length per variant (mean and
spread over seeds), accuracy per copied position, the decay probe on each Mamba, and the paper's
three claims checked against the numbers measured, seed by seed (studies/copy_claims.py).

The variants each claim compares are the study's ``roles`` (mamba_copy.yaml): the GPT and the
Mamba (d_state 16) at the shorter and at the longer maximum length, and the narrow and the
shallow Mamba; runs are ``VARIANT-s{seed}``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasonlab.reporting.content import Figure, Item, Section, Table
from reasonlab.reporting.seeds import mean_present, spread, variant_of
from reasonlab.runs.summary import StudyResult, StudyRun
from reasonlab.studies.copy_claims import copy_claims


def _length(probe: str) -> int:
    return int(probe.removeprefix("len"))


def _own_probe(task: dict[str, Any]) -> str:
    """The probe at a run's own maximum length: the longest test length within it (else the
    shortest test length)."""
    lengths = sorted(task["test_lengths"])
    within = [n for n in lengths if n <= task["max_length"]]
    return f"len{within[-1] if within else lengths[0]}"


def _by_variant(result: StudyResult) -> dict[str, list[tuple[str, StudyRun]]]:
    grouped: dict[str, list[tuple[str, StudyRun]]] = defaultdict(list)
    for name, run in result.runs.items():
        grouped[variant_of(name)].append((name, run))
    return grouped


def _plot_lengths(curves: dict[str, dict[int, list[float]]], families: dict[str, str]) -> bytes:
    """Accuracy against length, a line per variant (dashed: a GPT); ``families``: variant ->
    model.kind."""
    import matplotlib.pyplot as plt

    from reasonlab.reporting.plots import png_bytes

    fig, axis = plt.subplots(figsize=(6.2, 3.8))
    for variant, by_length in curves.items():
        lengths = sorted(by_length)
        values = np.array([by_length[n] for n in lengths], dtype=float)  # (lengths, seeds)
        style = "--" if families[variant] == "gpt" else "-"
        line = axis.plot(lengths, values.mean(1), style, marker="o", label=variant)[0]
        if values.shape[1] > 1:
            axis.fill_between(
                lengths, values.min(1), values.max(1), color=line.get_color(), alpha=0.15
            )
    axis.set_xlabel("copy length (strings of this length; longer than max_length: OOD)")
    axis.set_ylabel("whole-copy exact match")
    axis.set_ylim(-0.03, 1.03)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    axis.set_title("COPY accuracy against length (mean over seeds, band: min to max)", fontsize=9)
    return png_bytes(fig)


def _position_accuracy(run_dir: Path, probe: str) -> list[float]:
    """Accuracy at each copied position of ``probe`` for the run's final model (greedy), in the
    run's own precision, as its metrics were scored."""
    from reasonlab.tasks import build_task
    from reasonlab.tasks.copy import position_accuracy
    from reasonlab.training.evaluation import greedy_complete
    from reasonlab.training.loaded_run import load_run
    from reasonlab.training.precision import autocast_context

    loaded = load_run(run_dir)
    data = build_task(loaded.config.task)
    chosen = data.probes[probe]
    model = loaded.model
    with torch.inference_mode(), autocast_context(torch.device("cpu"), loaded.autocast):
        generated = torch.cat(
            [
                greedy_complete(
                    model,
                    chosen.tokens[start : start + 256],
                    chosen.prompt_len,
                    chosen.given[start : start + 256],
                )
                for start in range(0, len(chosen), 256)
            ]
        )
    return [round(v, 4) for v in position_accuracy(generated, chosen)]


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    from reasonlab.analysis.ssm import run_decay
    from reasonlab.experiments.study_spec import STUDIES

    out = Path(out)
    grouped = _by_variant(result)
    curves: dict[str, dict[int, list[float]]] = {}
    finals: dict[str, dict[str, float | None]] = {}
    seed_finals: dict[str, list[dict[str, float | None]]] = {}
    seed_steps: dict[str, dict[str, list[int | None]]] = {}
    own_probe: dict[str, str] = {}
    families: dict[str, str] = {}
    rows = []
    probes: list[str] = []
    for variant, runs in grouped.items():
        first = runs[0][1]
        config = first.config
        families[variant] = config["model"]["kind"]
        probes = sorted((k for k in first.final if "." not in k), key=_length)
        curves[variant] = {_length(p): [r.final.get(p) or 0.0 for _, r in runs] for p in probes}
        finals[variant] = {p: mean_present([r.final.get(p) for _, r in runs]) for p in probes}
        own = own_probe[variant] = _own_probe(config["task"])
        steps = [r.steps_to_threshold.get(own) for _, r in runs]
        seed_finals[variant] = [r.final for _, r in runs]
        seed_steps[variant] = {p: [r.steps_to_threshold.get(p) for _, r in runs] for p in probes}
        rows.append(
            [
                variant,
                len(runs),
                first.num_parameters,
                config["task"]["max_length"],
                *(spread([r.final.get(p) for _, r in runs]) for p in probes),
                spread(steps, 0, "reached"),
            ]
        )
    positions: dict[str, list[float]] = {}
    decay: dict[str, Any] = {}
    decay_figures: list[Item] = []
    for variant, runs in grouped.items():
        name, run = runs[0]
        config = run.config
        run_dir = out / "runs" / name
        positions[variant] = _position_accuracy(run_dir, own_probe[variant])
        if config["model"]["kind"] == "mamba":
            decay[variant] = run_decay(run_dir)["checkpoints"][-1]
            step = decay[variant]["step"]
            decay_figures.append(
                Figure(
                    run_dir / "analysis" / f"decay-all-step{step}.png",
                    f"decay probe {variant}",
                    f"Decay probe of {variant} "
                    "(reasonlab analyze decay): medians by distance of log10 c.b, of the most "
                    "persistent channel's cumulative decay, of the best channel's weight, and the "
                    "c.b growth Theorem 1 says is needed (dashed).",
                )
            )
    roles = STUDIES[result.study].roles
    claims = copy_claims(seed_finals, seed_steps, own_probe, min(probes, key=_length), roles)
    items: list[Item] = [
        Section(
            "Accuracy against copy length",
            items=[
                Figure(
                    _plot_lengths(curves, families),
                    "accuracy against length",
                    "Whole-copy exact match of each probe's strings at the end of training; "
                    "dashed: GPT.",
                ),
                Table(
                    [
                        "variant",
                        "seeds",
                        "parameters",
                        "max length",
                        *probes,
                        "steps to 0.95 (own max length)",
                    ],
                    rows,
                ),
            ],
        ),
        Section(
            "Accuracy per copied position",
            "First seed of each variant, its own maximum length: the share of strings whose k-th "
            "copied token is right (greedy decoding).",
            [
                Table(
                    ["variant", "positions 1 .. n"],
                    [[v, " ".join(f"{a:.2f}" for a in acc)] for v, acc in positions.items()],
                )
            ],
        ),
        Section("The paper's claims, checked", items=[*claims, *decay_figures]),
    ]
    analysis = {
        "final_by_variant": finals,
        "steps_to_threshold_by_variant": seed_steps,
        "position_accuracy": positions,
        "claims": [claim.text for claim in claims],
        "decay": {v: e["layers"] for v, e in decay.items()},
    }
    return analysis, items
