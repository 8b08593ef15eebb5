"""The run folder: config.json, metrics.jsonl, checkpoints/step-<N>.safetensors, summary.json.

Every file is written atomically (temporary file, flush, fsync, rename), so a killed run never
leaves half a checkpoint or half a summary; ``metrics.jsonl`` is appended line by line and a torn
last line is dropped when the run is resumed. Checkpoints hold the model, the optimizer state and
the RNG states in one safetensors file (no pickle); small scalars go to its string metadata.
What goes into a checkpoint and which checkpoints a run keeps is in checkpoints.py; the config
hash that ties a checkpoint to its config in hashing.py.
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from reasonlab.config import ConfigError, RunConfig, config_from_dict
from reasonlab.core.files import atomic_path, make_dir, read_json, write_json
from reasonlab.models.base import LanguageModel, strip_prefix
from reasonlab.runs import metrics
from reasonlab.runs.integrity import config_digest, verify_payload, with_digest

CHECKPOINT = re.compile(r"^step-(\d+)\.safetensors$")
# the length a rotary model of a checkpoint without model_shape is rebuilt for (any length at
# least the trained one gives the same logits: rotary tables depend only on the position)
LEGACY_SEQ_LEN = 1024


def versions() -> dict[str, str]:
    import numpy

    from reasonlab import __version__

    return {
        "reasonlab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- the run folder


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    summary_path = property(lambda self: self.path / "summary.json")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")
    vocab_path = property(lambda self: self.path / "vocab.json")

    # -- creation and reading

    def claim(self) -> None:
        """Makes the (empty) folder of a new run, so that it can be locked; refuses a file and a
        folder that already holds anything."""
        self._refuse_occupied()
        self._made_folder = not self.path.exists()
        make_dir(self.path)

    def create(self, config: RunConfig, vocab: list[str] | None = None) -> None:
        """Writes a new run's files (checkpoints/, vocab.json: the token of each id when the task
        has a vocabulary, then config.json) into an empty folder; refuses a folder that already
        holds anything. All or nothing: a write that fails (a full disk) removes what was
        written, so the folder is left empty (or gone, if ``claim`` made it) and a new run can
        use it. Call it holding the lock, after ``claim``."""
        self._refuse_occupied()
        try:
            make_dir(self.checkpoint_dir)
            if vocab:
                write_json(self.vocab_path, vocab)
            write_json(self.config_path, config.model_dump(mode="json"))
        except (OSError, ConfigError) as error:
            for path in (self.config_path, self.vocab_path):
                path.unlink(missing_ok=True)
            if self.checkpoint_dir.is_dir() and not any(self.checkpoint_dir.iterdir()):
                self.checkpoint_dir.rmdir()
            if getattr(self, "_made_folder", False) and not any(self.path.iterdir()):
                self.path.rmdir()
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(
                f"{error.filename or self.path}: cannot write ({error.strerror}); "
                "nothing of the run was kept"
            ) from None

    def check_writable(self) -> None:
        """Refuses a run folder that cannot be written (a read-only file system, no permission)
        before anything in it changes, and without writing anything to find out."""
        for folder in (self.path, self.checkpoint_dir):
            if not folder.is_dir():
                continue
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                cause = "Read-only file system"
            elif not os.access(folder, os.W_OK):
                cause = "Permission denied"
            else:
                continue
            raise ConfigError(f"{folder}: cannot write ({cause}); nothing was changed")

    def _refuse_occupied(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path}: is a file, expected a folder")
        if self.path.is_dir() and any(self.path.iterdir()):
            what = "a run (config.json)" if self.config_path.exists() else "other files"
            raise ConfigError(
                f"--out {self.path}: already holds {what}; choose another folder"
                + (" or --resume it" if self.config_path.exists() else "")
            )

    def load_config(self) -> RunConfig:
        if not self.path.is_dir():
            raise ConfigError(f"{self.path}: no such run folder")
        if not self.config_path.exists():
            refuse_study_folder(self.path)
        data = read_json(self.config_path)
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_path}: expected a JSON object")
        try:
            config = config_from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{self.config_path}: {error}") from None
        self._verify_config(data)  # valid, but is it what the run wrote?
        return config

    def _verify_config(self, data: dict[str, Any]) -> None:
        """config.json against the digest summary.json recorded when the run wrote it (runs of
        older versions, or with an unreadable summary, have none to compare with)."""
        try:
            recorded = json.loads(self.summary_path.read_text()).get("config_sha256")
        except (OSError, ValueError, AttributeError):
            return
        if isinstance(recorded, str) and recorded != config_digest(data):
            raise ConfigError(
                f"{self.config_path}: changed since the run wrote it (its checksum differs from "
                f"config_sha256 in {self.summary_path.name}); restore it, or start a new run"
            )

    def summary(self) -> dict[str, Any] | None:
        """summary.json as a JSON object (None when there is none yet). A damaged one is a
        ConfigError that says what to do: a resume rebuilds it."""
        if not self.summary_path.exists():
            return None
        try:
            data = read_json(self.summary_path)
            if not isinstance(data, dict):
                raise ConfigError(f"{self.summary_path}: expected a JSON object")
        except ConfigError as error:
            raise ConfigError(
                f"{error}; move it aside and resume again: a resume rebuilds summary.json from "
                "config.json, metrics.jsonl and the checkpoints (the run's notes are lost)"
            ) from None
        return data

    def vocab(self) -> list[str] | None:
        """The token of each id, as the run trained on it (None for runs made before 0.2)."""
        if not self.vocab_path.exists():
            return None
        tokens = read_json(self.vocab_path)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ConfigError(f"{self.vocab_path}: expected a list of tokens")
        return tokens

    # -- the writer's lock

    @contextmanager
    def lock(self, what: str = "run folder") -> Iterator[None]:
        """Holds an exclusive OS lock on the folder itself (flock on its descriptor) while the
        block runs. The kernel drops it when the process dies, even by SIGKILL, so a killed run
        stays resumable; no lock file is left behind. A second writer gets a ConfigError before
        it changes anything. The folder must exist."""
        with hold_lock(self.path, what):
            yield

    # -- metrics

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Appends one record (strict JSON: non-finite numbers become null, named)."""
        metrics.append_record(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """All readable records (for display and analysis; unreadable lines are skipped)."""
        return metrics.read_records(self.metrics_path)

    def resume_metrics(self, last_step: int) -> list[dict[str, Any]]:
        """The records up to ``last_step``, read strictly: only a torn last line may be dropped,
        any other damaged line is a ConfigError naming it. Changes nothing."""
        return [r for r in metrics.read_for_resume(self.metrics_path) if r["step"] <= last_step]

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        metrics.rewrite_records(self.metrics_path, records)

    # -- checkpoints

    def checkpoint_steps(self) -> list[int]:
        if not self.checkpoint_dir.is_dir():
            return []
        steps = [
            int(m.group(1))
            for p in self.checkpoint_dir.iterdir()
            if (m := CHECKPOINT.match(p.name))
        ]
        return sorted(steps)

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step-{step}.safetensors"

    def save_checkpoint(
        self, step: int, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> Path:
        path = self.checkpoint_path(step)
        path.parent.mkdir(parents=True, exist_ok=True)  # a resumed run may have lost the folder
        meta = {key: json.dumps(value) for key, value in {**metadata, "step": step}.items()}
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        # serialised in memory and written by atomic_path: safetensors' own file writer keeps a
        # temporary file of its own (".tmpXXXXXX") that a SIGKILL would leave behind
        payload = save_tensors(tensors, with_digest(tensors, meta))
        with atomic_path(path) as tmp:
            tmp.write_bytes(payload)
        return path

    def load_checkpoint(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return load_checkpoint_file(self.checkpoint_path(step))

    def load_model(self, step: int | None = None, config: RunConfig | None = None) -> LanguageModel:
        """The model of checkpoint ``step`` (None: the newest), on the CPU in eval mode: the one
        place a run's model is rebuilt, for every family. The build arguments are those the
        checkpoint recorded (``model_shape``); older checkpoints give them through their
        embedding and learned position tables."""
        from reasonlab.models.build import build_model

        config = config or self.load_config()
        steps = self.checkpoint_steps()
        if not steps:
            raise ConfigError(f"{self.checkpoint_dir}: no checkpoint")
        step = steps[-1] if step is None else step
        path = self.checkpoint_path(step)
        tensors, metadata = self.load_checkpoint(step)
        weights = strip_prefix(tensors)
        shape = metadata.get("model_shape")
        if isinstance(shape, dict) and {"vocab_size", "seq_len"} <= shape.keys():
            vocab_size, seq_len = int(shape["vocab_size"]), int(shape["seq_len"])
        elif "embed.weight" in weights:
            vocab_size = weights["embed.weight"].shape[0]
            positions = weights.get("pos_embed.weight")
            seq_len = (
                positions.shape[0]
                if positions is not None
                else config.model.max_seq_len or LEGACY_SEQ_LEN
            )
        else:
            raise ConfigError(f"{path}: no model_shape and no model.embed weights")
        vector_io = {
            key: int(shape[key])
            for key in ("input_dim", "output_dim")
            if isinstance(shape, dict) and shape.get(key) is not None
        }
        model = build_model(config.model, vocab_size, seq_len, **vector_io)
        try:
            model.load_state_dict(weights)
        except RuntimeError:
            raise ConfigError(f"{path}: does not fit the model of {self.config_path}") from None
        return model.eval()

    def delete_checkpoint(self, step: int) -> None:
        self.checkpoint_path(step).unlink(missing_ok=True)

    def remove_temporary_files(self) -> None:
        """Deletes the temporary files of atomic writes that a killed process left behind."""
        for folder in (self.path, self.checkpoint_dir):
            if folder.is_dir():
                # ours (".NAME.tmp-PID") and older safetensors writers' (".tmpXXXXXX")
                for tmp in [*folder.glob(".*.tmp-*"), *folder.glob(".tmp*")]:
                    tmp.unlink(missing_ok=True)


def load_checkpoint_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint, verified against the checksum it recorded; a
    corrupt, damaged or foreign file is a ConfigError naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
        tensors = load_file(str(path))
        metadata = {key: json.loads(value) for key, value in raw.items()}
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as error:
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise ConfigError(f"{path}: not a readable safetensors checkpoint ({reason})") from None
    verify_payload(path, tensors, raw)
    return tensors, metadata


def folder_name(name: str) -> str:
    """A config or run name made safe as one folder name: no separators, no leading dots (so
    never ``..``), only letters, digits, ``.``, ``_`` and ``-``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-")
    return safe[:100] or "run"


def refuse_study_folder(path: Path) -> None:
    """A study folder given where a run folder is expected: say so and list its runs."""
    summary_path = path / "summary.json"
    if not (path / "runs").is_dir() or not summary_path.exists():
        return
    try:
        study = json.loads(summary_path.read_text()).get("study")
    except (OSError, ValueError, AttributeError):
        return
    if study is None:
        return
    runs = sorted(p.name for p in (path / "runs").iterdir() if p.is_dir())
    shown = ", ".join(str(path / "runs" / name) for name in runs[:6])
    more = f" and {len(runs) - 6} more" if len(runs) > 6 else ""
    raise ConfigError(
        f"{path}: is a study folder ({study}), not a run folder; its runs: "
        f"{shown or 'none yet'}{more}"
    )


@contextmanager
def hold_lock(folder: Path, what: str = "run folder") -> Iterator[None]:
    """An exclusive, non-blocking flock on ``folder``; see ``RunDir.lock``."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unlocked (documented in RELIABILITY)
        yield
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError as error:
        raise ConfigError(f"{folder}: cannot open the {what} ({error.strerror})") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{folder}: the {what} is in use by another reasonlab process; "
                "wait for it to finish (or stop it) and try again"
            ) from None
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


def check_data_fingerprint(run: RunDir, fingerprint: str, allow_change: bool = False) -> str | None:
    """Compares the data rebuilt now with the fingerprint the run recorded when it was made.
    A mismatch is a ConfigError naming both values, unless ``allow_change``; then the return
    value is a note for the run (None when the data matches or nothing was recorded)."""
    recorded = (run.summary() or {}).get("data_fingerprint")
    if recorded is None or recorded == fingerprint:
        return None
    if not allow_change:
        raise ConfigError(
            f"{run.summary_path}: data_fingerprint {recorded} was recorded, but the task "
            f"rebuilds to {fingerprint} (the data changed: another reasonlab version, a changed "
            "task.data_dir folder?); --allow-data-change proceeds anyway and notes it in the run"
        )
    return f"data changed: recorded fingerprint {recorded}, continued with {fingerprint}"
