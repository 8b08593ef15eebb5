"""``reasonlab data`` for token tasks written one example per line (COPY, dynamic programs):
``train.txt`` and ``test.txt``, tokens separated by spaces, padding left out."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from reasonlab.core.files import atomic_path, make_dir
from reasonlab.tasks.base import TaskData


def _lines(data: TaskData, tokens: Tensor) -> list[str]:
    return [data.decode(row) for row in tokens]


def write_text_dataset(data: TaskData, out: Path) -> dict[str, int]:
    """Writes train.txt, test.txt (every probe's rows, probe by probe in name order),
    test_probes.json (probe name -> its first and last line of test.txt, 1-based) and
    vocab.json into ``out``; returns line counts."""
    make_dir(out)
    train = _lines(data, data.train_tokens)
    test: list[str] = []
    spans: dict[str, list[int]] = {}
    for name in sorted(data.probes):
        rows = _lines(data, data.probes[name].tokens)
        spans[name] = [len(test) + 1, len(test) + len(rows)]
        test += rows
    files = {
        "train.txt": "".join(line + "\n" for line in train),
        "test.txt": "".join(line + "\n" for line in test),
        "test_probes.json": json.dumps(spans, indent=1) + "\n",
        "vocab.json": json.dumps(data.vocab) + "\n",
    }
    for name, text in files.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    return {"train": len(train), "test": len(test)}
