"""A resume: every check it depends on (the summary, the data, the checkpoint, the metrics) before
anything in the run folder changes, then the restore and the repair of what a killed process left
behind; and the one change a resume may make to a config (more steps)."""

from __future__ import annotations

from collections.abc import Callable

from reasonlab.config import ConfigError, RunConfig, apply_overrides, config_from_dict
from reasonlab.core.files import write_json
from reasonlab.runs.checkpoints import unpack_state
from reasonlab.runs.folder import check_data_fingerprint
from reasonlab.runs.summary import RunSummary
from reasonlab.training.state import Training


def prepare_resume(
    state: Training,
    fingerprint: str,
    notes: list[str],
    allow_data_change: bool,
    on_resume: Callable[[int], None] | None,
    from_step: int | None = None,
) -> list[str]:
    """Checks everything a resume depends on (the summary, the data, the checkpoint, the
    metrics), restores the newest checkpoint into ``state``, and only then repairs the folder.
    Returns the run's notes."""
    config, run, checkpoints = state.config, state.run, state.checkpoints
    previous_data = run.summary()
    previous = RunSummary.parse(previous_data or {}, run.summary_path)
    data_note = check_data_fingerprint(run, fingerprint, allow_data_change)
    start_step, saved = checkpoints.resume_point(from_step)
    records = run.resume_metrics(start_step if saved is not None else -1)
    recorded_steps = run.load_config().train.steps
    checkpoints.kept = set(previous.continued_from)
    notes = list(dict.fromkeys([*previous.notes, *notes]))
    if recorded_steps != config.train.steps:
        if config.train.steps <= start_step:
            raise ConfigError(
                f"train.steps: {config.train.steps} is not beyond step {start_step}, "
                "where the run's newest checkpoint is"
            )
        checkpoints.kept.add(start_step)
        notes.append(
            f"continued from step {start_step}: train.steps {recorded_steps} -> "
            f"{config.train.steps}"
        )
    if data_note:
        notes.append(data_note)
    if saved is not None:
        tensors, metadata = saved
        path = str(run.checkpoint_path(start_step))
        unpack_state(
            tensors, state.model, state.optimizer, metadata["param_groups"], state.device, path
        )
        state.elapsed_before, state.tokens_seen = metadata["elapsed_s"], metadata["tokens"]
        state.start_step = state.history.step = start_step
    # every check passed and the checkpoint is restored: only now may the folder change
    if on_resume is not None:
        on_resume(start_step)
    if from_step is not None:
        checkpoints.set_aside_newer(start_step)
        notes.append(f"resumed from step {start_step}: newer checkpoints were damaged")
    if recorded_steps != config.train.steps:
        write_json(run.config_path, config.model_dump(mode="json"))
    # repair what a killed process left behind
    state.history.records = checkpoints.repair(
        start_step if saved is not None else -1,
        records,
        saved[1] if saved is not None else None,
        remove_stale=previous_data is not None,
    )
    return notes


def extend_config(config: RunConfig, overrides: list[str]) -> RunConfig:
    """A run's config with ``--set`` overrides for ``--resume``: only ``train.steps`` may change
    (continue the run to more steps); anything else would make the checkpoints mean something
    else."""
    data = apply_overrides(config.model_dump(mode="json"), overrides)
    extended = config_from_dict(data)
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key != "train.steps":
            raise ConfigError(
                f"--set {key}: with --resume only train.steps can change (to continue a run)"
            )
    return extended
