"""Analysis step of the icl-regression study: per function class, the trained model's error
against the number of in-context examples beside least squares, ridge, 3-nearest neighbours,
averaging and one gradient step, all on the same test prompts (``analysis/icl.py``), with the
mean and spread over seeds; and the check for noiseless linear regression: the model's error
falls with the number of examples and is at most 0.05 after 2d examples, where averaging stays
far above it.

A variant's function class is read from its runs' config (task.function_class); runs are
``VARIANT-s{seed}`` (icl_regression.yaml).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.reporting.content import Claim, Figure, Item, Section, Table, Verdict
from reasonlab.reporting.seeds import spread, variant_of
from reasonlab.runs.folder import RunDir
from reasonlab.runs.summary import StudyResult
from reasonlab.studies.verdicts import verdict_every_seed

TARGET_ERROR = 0.05  # the acceptance: linear regression's error after 2d examples


def run_curves(run_dir: Path) -> dict[str, list[float]]:
    """The final model's and the baselines' error curves on the run's own test prompts."""
    from reasonlab.analysis.icl import error_curves
    from reasonlab.tasks import build_task
    from reasonlab.training.loaded_run import run_precision

    run = RunDir(run_dir)
    config = run.load_config()
    probe = build_task(config.task).probes["test"]
    bf16 = run_precision(run, config) == "bf16"  # the model scored as the run scored it
    return error_curves(run.load_model(), probe, autocast=bf16)


def _plot(by_class: dict[str, dict[str, np.ndarray]], dims: dict[str, int]) -> bytes:
    import matplotlib.pyplot as plt

    from reasonlab.reporting.plots import png_bytes

    columns = min(3, len(by_class))
    rows = -(-len(by_class) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.3 * rows), squeeze=False)
    for axis, (name, curves) in zip(axes.flat, by_class.items(), strict=False):
        for curve_name, values in curves.items():
            k = np.arange(values.shape[1])
            mean = values.mean(0)
            style = {"lw": 2.2, "color": "black"} if curve_name == "model" else {"lw": 1.1}
            axis.plot(k, mean, label=curve_name, **style)
            if curve_name == "model" and len(values) > 1:
                axis.fill_between(k, values.min(0), values.max(0), color="grey", alpha=0.3, lw=0)
        axis.axvline(dims[name], color="grey", lw=0.8, ls=":")
        axis.set_ylim(-0.02, 1.5)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("in-context examples k")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(by_class) :]:
        axis.axis("off")
    axes.flat[0].set_ylabel("squared error / E[f(x)²]")
    axes.flat[0].legend(fontsize=7, frameon=False)
    return png_bytes(fig)


def _falls(curve: np.ndarray, at: int) -> bool:
    """The error falls with k up to ``at`` (no rise beyond noise)."""
    return bool(np.all(np.diff(curve[: at + 1]) < 0.02))


def linear_verdict(model: np.ndarray, at: int) -> tuple[Verdict, str]:
    """The target (the error falls with k and is at most TARGET_ERROR after 2d examples) on
    the mean curve and on each seed's: reproduces when it holds on the mean and in every seed,
    does not reproduce when it fails on the mean and in every seed, else undecided (the seeds
    disagree, or fewer than 2)."""

    def holds(curve: np.ndarray) -> bool:
        return bool(curve[at] <= TARGET_ERROR) and _falls(curve, at)

    return verdict_every_seed(holds(model.mean(0)), [holds(curve) for curve in model])


def _linear_check(curves: dict[str, np.ndarray], dim: int) -> Claim:
    model, averaging, least = curves["model"], curves["averaging"], curves["least_squares"]
    at = min(2 * dim, model.shape[1] - 1)
    per_seed = model[:, at]
    first, last = model.mean(0)[0], per_seed.mean()
    verdict, why = linear_verdict(model, at)
    return Claim(
        f"linear regression (d = {dim}): error after {at} examples {last:.3f} (per seed "
        f"{', '.join(f'{v:.3f}' for v in per_seed)}), from {first:.3f} with no examples; "
        f"averaging {averaging[:, at].mean():.3f}, least squares {least[:, at].mean():.3f}. "
        f"The target (falls with k, at most {TARGET_ERROR} after 2d examples, on the mean and "
        f"in every seed): {verdict}{why}.",
        verdict,
        f"linear-d{dim}",
        {"error_after_2d": [float(v) for v in per_seed]},
    )


def analyze(out: Path, result: StudyResult) -> tuple[dict[str, Any], list[Item]]:
    runs: dict[str, list[dict[str, list[float]]]] = defaultdict(list)
    dims: dict[str, int] = {}
    classes: dict[str, str] = {}
    for name, run in result.runs.items():
        if run.status != "completed":
            continue
        runs[variant_of(name)].append(run_curves(out / "runs" / name))
        dims[variant_of(name)] = run.config["task"]["dim"]
        classes[variant_of(name)] = run.config["task"]["function_class"]
    by_class = {
        variant: {key: np.array([c[key] for c in curves]) for key in curves[0]}
        for variant, curves in runs.items()
    }
    rows = []
    for variant, curves in by_class.items():
        dim = dims[variant]
        for k in sorted({dim // 2, dim, min(2 * dim, curves["model"].shape[1] - 1)}):
            rows.append([variant, k, *(spread(list(values[:, k])) for values in curves.values())])
    claims = [_linear_check(c, dims[v]) for v, c in by_class.items() if classes[v] == "linear"]
    items: list[Item] = []
    if by_class:
        header = ["function class", "examples k", *next(iter(by_class.values())).keys()]
        items = [
            Section(
                "Error against in-context examples",
                items=[
                    Figure(
                        _plot(by_class, dims),
                        "error against examples",
                        "Squared error divided by E[f(x)²] (the error of predicting 0; d for "
                        "linear regression), on the same test prompts for the model and every "
                        "baseline; black: the trained model (mean over seeds, band: lowest to "
                        "highest seed); dotted: k = d.",
                    ),
                    Table(header, rows),
                ],
            ),
            Section("Claims, checked", items=claims),
        ]
    curves_json = {
        v: {k: a.mean(0).round(5).tolist() for k, a in c.items()} for v, c in by_class.items()
    }
    return {"mean_curves": curves_json, "claims": [claim.text for claim in claims]}, items
