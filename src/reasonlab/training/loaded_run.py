"""A trained run loaded back and scored as its training scored it: the same probes (rebuilt from
config.json), the same batch size and the same precision.

A run that trained under bf16 autocast (``train.precision: bf16``, or ``auto`` on CUDA or on a
CPU with bf16 matrix units) was also scored under it, and its summary.json records
``"precision": "bf16"``. Scoring its model again in fp32 changes the argmax wherever two logits
were closer than bf16's rounding, so a few answers, and so the accuracies, differ from
metrics.jsonl. ``evaluate_run`` and ``load_run`` therefore take the run's own precision by
default (``precision="run"``); ``"fp32"`` or ``"bf16"`` ask for another one.

On a CPU the result still depends on the CPU: bf16 autocast rounds the same way everywhere, but
matrix kernels (AMX, AVX512-BF16, emulated) sum in different orders, so a run scored on another
machine, or on a GPU, agrees only up to near-ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, NamedTuple

import torch

from reasonlab.config import ConfigError, RunConfig
from reasonlab.models.base import LanguageModel
from reasonlab.runs.folder import RunDir, check_data_fingerprint
from reasonlab.runs.summary import RunSummary
from reasonlab.tasks.base import Probe, RegressionProbe
from reasonlab.training.evaluation import evaluate
from reasonlab.training.precision import precision_for_run

Precision = Literal["run", "bf16", "fp32"]
PRECISIONS = ("run", "bf16", "fp32")


class LoadedRun(NamedTuple):
    run: RunDir
    config: RunConfig
    step: int  # the checkpoint loaded
    model: LanguageModel  # on the CPU, in eval mode
    autocast: bool  # score under bf16 autocast (the run's precision unless asked otherwise)


def _training_device(name: str) -> torch.device:
    """The device a run's ``train.device`` named, as far as it decides the precision."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_precision(run: RunDir, config: RunConfig | None = None) -> str:
    """ "bf16" or "fp32": the precision the run trained and was scored in, as its summary.json
    records it; a run without the record (made before it was kept, or stopped before its first
    summary) resolves its ``train.precision`` on the device it named."""
    summary = RunSummary.read_if_present(run.summary_path)
    if summary is not None and summary.precision in ("bf16", "fp32"):
        return summary.precision
    from reasonlab.tasks import build_task

    config = config or run.load_config()
    seq_len = build_task(config.task).io().max_seq_len
    choice = precision_for_run(config, _training_device(config.train.device), seq_len)
    return "bf16" if choice.bf16 else "fp32"


def load_run(
    run_dir: str | Path, step: int | None = None, precision: Precision = "run"
) -> LoadedRun:
    """The model of checkpoint ``step`` (None: the newest) with the precision to score it in:
    the run's own by default (module docstring)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    run = RunDir(run_dir)
    config = run.load_config()
    steps = run.checkpoint_steps()
    if not steps:
        raise ConfigError(f"{run.checkpoint_dir}: no checkpoint")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ConfigError(f"step: {run.path} has no checkpoint {step} (kept: {steps})")
    chosen = run_precision(run, config) if precision == "run" else precision
    return LoadedRun(run, config, step, run.load_model(step, config), chosen == "bf16")


def evaluate_run(
    run_dir: str | Path,
    step: int | None = None,
    probes: Iterable[str] | Mapping[str, Probe | RegressionProbe] | None = None,
    *,
    precision: Precision = "run",
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> dict[str, float]:
    """The scores of checkpoint ``step`` (None: the newest) on ``probes`` (names of the run's
    probes, probes of your own, or None: every probe of the run), in the run's precision and
    with its ``eval.batch_size`` unless told otherwise: on the machine that trained it, the
    numbers of metrics.jsonl at that step. The task is rebuilt from config.json and must give
    the data the run recorded (its fingerprint), else a ConfigError."""
    loaded = load_run(run_dir, step, precision)
    chosen: Mapping[str, Probe | RegressionProbe]
    if isinstance(probes, Mapping):
        chosen = probes
    else:
        from reasonlab.tasks import build_task

        data = build_task(loaded.config.task)
        check_data_fingerprint(loaded.run, data.fingerprint())
        names = list(data.probes) if probes is None else list(probes)
        unknown = [name for name in names if name not in data.probes]
        if unknown:
            raise ConfigError(
                f"probes: {', '.join(unknown)} not among the run's ({', '.join(data.probes)})"
            )
        chosen = {name: data.probes[name] for name in names}
    device = torch.device(device)
    return evaluate(
        loaded.model.to(device),
        dict(chosen),  # type: ignore[arg-type]
        batch_size or loaded.config.eval.batch_size,
        device,
        loaded.autocast,
    )
