"""Checksums that let a run prove its files are intact when they are read back.

A checkpoint records, in its own metadata, the SHA-256 of everything else it holds: every tensor
(name, dtype, shape and bytes) and every other metadata entry. Reading a checkpoint recomputes it;
a mismatch means the file changed after it was written (a flipped bit, an edit, a bad disk) and the
checkpoint is refused. The header and the file's length are checked by safetensors itself, so only
the payload needed this. Checkpoints written before the checksum existed carry none and are read as
before.

``config.json`` is checked the same way against the digest that ``summary.json`` records
(``config_sha256``, of the parsed JSON, so that reformatting the file is not a change).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from reasonlab.config import ConfigError

DIGEST_KEY = "payload_sha256"


def payload_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of the tensors (in name order) and of the metadata strings but the digest's own."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # its bytes, not a copy
    entries = {key: value for key, value in metadata.items() if key != DIGEST_KEY}
    digest.update(json.dumps(entries, sort_keys=True).encode())
    return digest.hexdigest()


def with_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """The metadata strings with the payload's checksum added (written into the checkpoint)."""
    # as JSON text, like every other metadata entry
    return {**metadata, DIGEST_KEY: json.dumps(payload_digest(tensors, metadata))}


def verify_payload(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Refuses a checkpoint whose payload is not the one its checksum was computed from."""
    recorded = metadata.get(DIGEST_KEY)
    if recorded is None:  # written before checksums: nothing to compare with
        return
    if json.dumps(payload_digest(tensors, metadata)) != recorded:
        raise DamagedCheckpoint(
            f"{path}: damaged: its contents do not match the checksum recorded when it was "
            "written (the file changed on disk)"
        )


class DamagedCheckpoint(ConfigError):
    """A checkpoint whose payload does not match its checksum (exit 2: the file is bad input)."""


def config_digest(data: Any) -> str:
    """SHA-256 of a parsed config.json, independent of its formatting."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
