"""``reasonlab data CONFIG --format hf --out DIR``: a token task's dataset as a Hugging Face
``DatasetDict``, one split for training and one per probe.

The rows and columns are those of the task's text format, which is written first (into a
temporary folder) and read back, so the two cannot differ:

- two-hop (the Grokked JSON layout): ``input_text`` (the question), ``target_text`` (question and
  completion), ``type`` (the probe; null in ``train``). ``train`` is ``train.json``, each probe
  split the items of ``test.json`` of that type (``valid.json`` is the ``test_inferred_ood``
  split again, so it is not repeated).
- COPY and dynamic programs (``train.txt``, ``test.txt``): ``text``, one example per row, tokens
  separated by spaces; each probe split is its lines of ``test.txt`` (``test_probes.json``).

DIR holds ``DatasetDict.save_to_disk``'s folders (``datasets.load_from_disk(DIR)``) and a
``README.md`` whose ``configs`` name each split's Arrow files, so that
``datasets.load_dataset(DIR)`` reads the same splits. Every split has the same columns, all
strings. A vector task (in-context regression) has no text and is refused.

``datasets`` is imported only here, when this format is asked for.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from reasonlab.config import ConfigError, TaskConfig
from reasonlab.core.files import atomic_path, read_json
from reasonlab.tasks import VECTOR_TASKS, write_dataset

SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")  # what datasets accepts as a split name
TWOHOP_COLUMNS = ("input_text", "target_text", "type")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "--format: hf datasets need the datasets package (pip install 'reasonlab[hf]')"
        ) from None
    return datasets


Columns = dict[str, list]


def _twohop_splits(folder: Path) -> tuple[Columns, dict[str, Columns]]:
    def columns(items: list[dict[str, Any]]) -> Columns:
        return {name: [item.get(name) for item in items] for name in TWOHOP_COLUMNS}

    groups: dict[str, list[dict[str, Any]]] = {}
    for item in read_json(folder / "test.json"):
        groups.setdefault(str(item.get("type")), []).append(item)
    probes = {name: columns(items) for name, items in groups.items()}
    return columns(read_json(folder / "train.json")), probes


def _text_splits(folder: Path) -> tuple[Columns, dict[str, Columns]]:
    test = (folder / "test.txt").read_text().splitlines()
    spans = read_json(folder / "test_probes.json")
    probes = {name: {"text": test[first - 1 : last]} for name, (first, last) in spans.items()}
    return {"text": (folder / "train.txt").read_text().splitlines()}, probes


def read_splits(folder: Path) -> dict[str, Columns]:
    """Split name -> column -> values (``train``, then the probes), from the text format
    written into ``folder``."""
    text = (folder / "test_probes.json").exists()
    train, probes = _text_splits(folder) if text else _twohop_splits(folder)
    if "train" in probes:
        raise ConfigError("task: a probe is named train, the name of the training split")
    return {"train": train, **probes}


def _check_split_names(splits: dict[str, Any], field: str) -> None:
    for name in splits:
        if not SPLIT_NAME.match(name):
            raise ConfigError(f"{field}: probe {name!r} is not a valid Hugging Face split name")


def dataset_card(cfg: TaskConfig, splits: dict[str, dict[str, list]]) -> str:
    """README.md: the configs that make ``load_dataset(DIR)`` read each split's Arrow files,
    then the splits and columns."""
    front = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"{name}/data-*.arrow"} for name in splits],
            }
        ],
        "tags": ["reasonlab", cfg.kind, "synthetic-reasoning"],
    }
    columns = next(iter(splits.values())).keys()
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]
    lines += [f"# reasonlab data: task {cfg.kind}", ""]
    lines += ["Written by `reasonlab data CONFIG --format hf`. Load it with", ""]
    lines += ["```python", "import datasets", "", 'data = datasets.load_dataset("DIR")']
    lines += ['# or: data = datasets.load_from_disk("DIR")', "```", ""]
    lines += [f"Columns: {', '.join(f'`{c}`' for c in columns)}.", "", "| split | rows |"]
    lines += ["|---|---|", *(f"| {n} | {len(next(iter(s.values())))} |" for n, s in splits.items())]
    return "\n".join(lines) + "\n"


def write_hf_dataset(cfg: TaskConfig, out: Path) -> dict[str, int]:
    """Writes the dataset of ``cfg`` into ``out`` (new or empty) as described above; returns
    the number of rows per split."""
    if cfg.kind in VECTOR_TASKS:
        raise ConfigError(
            f"--format: hf writes token tasks only; task.kind {cfg.kind} is a task of vectors "
            "(--format text writes its test.jsonl)"
        )
    datasets = _datasets()
    with tempfile.TemporaryDirectory(prefix="reasonlab-data-") as tmp:
        write_dataset(cfg, Path(tmp))
        splits = read_splits(Path(tmp))
    _check_split_names(splits, "task")
    names = next(iter(splits.values())).keys()
    features = datasets.Features({name: datasets.Value("string") for name in names})
    data = datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(cols, features=features) for name, cols in splits.items()}
    )
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        data.save_to_disk(str(out))
    finally:
        if bars:
            datasets.enable_progress_bars()
    with atomic_path(out / "README.md") as tmp_path:
        tmp_path.write_text(dataset_card(cfg, splits))
    return {name: len(next(iter(cols.values()))) for name, cols in splits.items()}
