"""The run folder: config.json, metrics.jsonl, checkpoints/step-<N>.safetensors, summary.json.

Every file is written atomically (temporary file, flush, fsync, rename), so a killed run never
leaves half a checkpoint or half a summary; ``metrics.jsonl`` is appended line by line and a torn
last line is dropped when the run is resumed. Checkpoints hold the model, the optimizer state and
the RNG states in one safetensors file (no pickle); small scalars go to its string metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Iterator, Set
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from torch import Tensor, nn

from reasonlab.config import ConfigError, RunConfig, config_from_dict
from reasonlab.core.files import atomic_path, make_dir, read_json, write_json
from reasonlab.models.base import LanguageModel, strip_prefix

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
        make_dir(self.path)

    def create(self, config: RunConfig, vocab: list[str] | None = None) -> None:
        """Writes a new run's config.json (and vocab.json, the token of each id, when the task
        has a vocabulary) into an empty folder; refuses a folder that already holds anything.
        Call it holding the lock, after ``claim``."""
        self._refuse_occupied()
        make_dir(self.checkpoint_dir)
        if vocab:
            write_json(self.vocab_path, vocab)
        write_json(self.config_path, config.model_dump(mode="json"))

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
            return config_from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{self.config_path}: {error}") from None

    def summary(self) -> dict[str, Any] | None:
        return read_json(self.summary_path) if self.summary_path.exists() else None

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
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete records; a torn last line (from a killed process) is skipped."""
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "step" in record:
                records.append(record)
        return records

    def truncate_metrics(self, last_step: int) -> list[dict[str, Any]]:
        """Keeps records up to ``last_step`` (dropping torn lines); used on resume."""
        records = [r for r in self.read_metrics() if r["step"] <= last_step]
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        return records

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
        # serialised in memory and written by atomic_path: safetensors' own file writer keeps a
        # temporary file of its own (".tmpXXXXXX") that a SIGKILL would leave behind
        payload = save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta)
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
    """Tensors and metadata of a checkpoint; a corrupt or foreign file is a ConfigError."""
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


def is_log_spaced(step: int, every: int) -> bool:
    """True at evaluation steps 1, 2, 4, 8, ... intervals of ``every`` into training."""
    if step % every:
        return False
    n = step // every
    return n > 0 and n & (n - 1) == 0


# ----------------------------------------------------------------------------- training state


# Keys added after checkpoints were first written, with the value that means "as before": at that
# value they are left out of the hash, so that older checkpoints stay resumable.
ADDED_MODEL_KEYS = {
    "attention": "softmax",
    "attention_reg": 0.5,
    "attention_hidden": 16,
    "attention_beta": 0.1,
}


def _hashed_sections(config: RunConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", include={"task", "model", "train"})
    data["train"].pop("device", None)
    if data["model"].get("attention", "softmax") == "softmax":
        for key in ADDED_MODEL_KEYS:
            data["model"].pop(key, None)
    return data


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(config: RunConfig) -> str:
    """Identifies what a checkpoint was trained on (the task, the model and the optimizer); the
    device and the number of steps are left out, so a run can move or be continued."""
    data = _hashed_sections(config)
    data["train"].pop("steps", None)
    return _digest(data)


def legacy_config_hash(config: RunConfig) -> str:
    """The hash of reasonlab 0.1.0 checkpoints, which counted the steps in: still resumable."""
    return _digest(_hashed_sections(config))


def pack_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """The model, the optimizer state and the RNG states as one flat dict of tensors."""
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).clone()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    return tensors


def load_model_state(model: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Loads a checkpoint's ``model.*`` tensors; a checkpoint of another shape is a ConfigError."""
    try:
        model.load_state_dict(strip_prefix(tensors))
    except RuntimeError:
        raise ConfigError(f"{source}: checkpoint does not fit this run's model") from None


def unpack_state(
    tensors: dict[str, Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    param_groups: list[dict[str, Any]],
    device: torch.device,
    source: str,
) -> None:
    """Restores what ``pack_state`` saved: weights, optimizer state, RNG states."""
    load_model_state(model, tensors, source)
    state: dict[int, dict[str, Tensor]] = {}
    try:
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                moved = value.to(device) if name != "step" else value
                state.setdefault(int(index), {})[name] = moved
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError):
        raise ConfigError(f"{source}: optimizer state does not fit this run's model") from None
    try:
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, RuntimeError, TypeError):
        raise ConfigError(f"{source}: rng.torch is not a torch RNG state") from None
    if torch.cuda.is_available():
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


CHECKPOINT_METADATA = {"elapsed_s": (int, float), "tokens": int, "param_groups": list}


def permanent_checkpoint(config: RunConfig, step: int, kept: Set[int] = frozenset()) -> bool:
    """Whether the checkpoint of ``step`` is kept for good (not only as the latest one): the
    log-spaced schedule, the last step, and the steps a continued run started from."""
    log_cfg = config.log
    if log_cfg.checkpoints == "none":
        return False
    if step == config.train.steps or step in kept:
        return True
    return log_cfg.checkpoints == "log" and is_log_spaced(step, config.eval.every)


class TrainingCheckpoints:
    """The checkpoints of one training run: where a resume starts, what a killed process left
    behind, and which checkpoint to keep after each evaluation."""

    def __init__(self, run: RunDir, config: RunConfig, kept: Set[int] = frozenset()):
        self.run, self.config = run, config
        self.kept = set(kept)  # kept for good beyond the schedule (where continued runs started)
        self.latest: int | None = None  # the newest checkpoint, kept only to resume from

    def resume_point(self) -> tuple[int, tuple[dict[str, Tensor], dict[str, Any]] | None]:
        """The newest checkpoint's step and (tensors, metadata), checked; reads, never writes,
        so a refused resume leaves the folder as it was."""
        steps = self.run.checkpoint_steps()
        if not steps:
            return 0, None
        step = steps[-1]
        path = self.run.checkpoint_path(step)
        tensors, metadata = self.run.load_checkpoint(step)
        if metadata.get("config_hash") not in (
            config_hash(self.config),
            legacy_config_hash(self.config),
        ):
            raise ConfigError(f"{path}: checkpoint from another config")
        bad = [k for k, t in CHECKPOINT_METADATA.items() if not isinstance(metadata.get(k), t)]
        bad += [] if "rng.torch" in tensors else ["rng.torch"]
        if bad:
            raise ConfigError(f"{path}: checkpoint lacks a valid {', '.join(bad)}")
        return step, (tensors, metadata)

    def repair(self, step: int) -> list[dict[str, Any]]:
        """Undoes what a process killed after checkpoint ``step`` (-1: none) left behind:
        temporary files, a stale latest-only checkpoint, metrics past ``step`` and a torn last
        line. Returns the metrics records kept."""
        self.run.remove_temporary_files()
        for stale in self.run.checkpoint_steps():
            if stale < step and not self.permanent(stale):
                self.run.delete_checkpoint(stale)
        steps = self.run.checkpoint_steps()
        self.latest = steps[-1] if steps and step > 0 else None
        return self.run.truncate_metrics(step)

    def permanent(self, step: int) -> bool:
        return permanent_checkpoint(self.config, step, self.kept)

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        metadata: dict[str, Any],
    ) -> None:
        """After the evaluation of ``step``: writes its checkpoint if the schedule keeps it or
        ``log.keep_latest`` asks for the latest, and drops the previous latest-only one."""
        last = step == self.config.train.steps
        if not (self.permanent(step) or self.config.log.keep_latest):
            return
        metadata = {
            "config_hash": config_hash(self.config),
            **metadata,
            "param_groups": optimizer.state_dict()["param_groups"],
        }
        self.run.save_checkpoint(step, pack_state(model, optimizer), metadata)
        if self.latest is not None and self.latest != step and not self.permanent(self.latest):
            self.run.delete_checkpoint(self.latest)
        self.latest = step
        if last and not self.permanent(step):
            self.run.delete_checkpoint(step)  # the run is over: nothing left to resume
            self.latest = None
