"""What every task hands to the trainer, and what differs between kinds of task.

A task knows no model. ``Task`` is the seam (docs/ARCHITECTURE.md, "Two seams"): a task owns
its input and output kind (``io``), how the batch of a step is drawn (``batch``: from a fixed
dataset, or fresh samples seeded by (seed, step)), its loss given the model's outputs (``loss``),
its probes, and its ``metric`` (what the probes' numbers mean and whether lower or higher is
better). The one training loop, the run folder, resume and the report use only this interface.

Two kinds exist: token tasks (``TaskData``: sequences of token ids, right-padded with ``pad_id``,
a loss mask marking the positions the model is trained to predict, probes scored by greedy
decoding) and vector tasks (``tasks/icl.py``: in-context regression, scored by squared error).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Metric:
    """What a task's probe numbers are: their label for plots and their direction."""

    label: str
    higher_is_better: bool

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "higher_is_better": self.higher_is_better}


ACCURACY = Metric("exact-match accuracy", higher_is_better=True)


@dataclass(frozen=True)
class ModelIO:
    """What a model must read and write for a task: token ids over ``vocab_size`` symbols, or
    vectors of ``input_dim`` in and ``output_dim`` out; and the longest sequence."""

    max_seq_len: int
    vocab_size: int = 0
    input_dim: int | None = None
    output_dim: int | None = None

    def shape(self) -> dict[str, int | None]:
        """What a checkpoint records so that the model can be rebuilt (``runs.load_model``)."""
        shape: dict[str, int | None] = {"vocab_size": self.vocab_size, "seq_len": self.max_seq_len}
        if self.input_dim is not None or self.output_dim is not None:
            shape |= {"input_dim": self.input_dim, "output_dim": self.output_dim}
        return shape


@dataclass
class Batch:
    """One training step's data, on the CPU: ``inputs`` go to the model, the rest to the loss.

    inputs:  (B, L) token ids or (B, L, input_dim) vectors.
    targets: what the loss compares the model's outputs with.
    mask:    (B, L) bool, the output positions the loss reads.
    units:   tokens (or positions) the step trained on, counted in ``metrics.jsonl``.
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    units: int

    def to(self, device: torch.device) -> Batch:
        move = {"device": device, "non_blocking": True}
        return Batch(
            self.inputs.to(**move), self.targets.to(**move), self.mask.to(**move), self.units
        )


class Task:
    """The interface of every kind of task (see the module docstring)."""

    metric: Metric = ACCURACY
    vocab: list[str] | None  # the token of each id; None for a task of vectors
    probes: dict[str, Any]
    stats: dict[str, Any]
    notes: list[str]
    resolved: dict[str, Any]

    def io(self) -> ModelIO:
        raise NotImplementedError

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        """The batch of optimizer step ``step``: a function of (step, batch_size, seed) only, so
        a resumed run sees exactly the batches it would have seen."""
        raise NotImplementedError

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def headline_probes(self) -> list[str]:
        return list(self.probes)[:2]

    def example_inputs(self, n: int) -> Tensor:
        """Up to ``n`` model inputs from the first probe, for analyses that run the model."""
        raise NotImplementedError

    def pin_memory(self) -> None:
        """Pins what batches are cut from, for faster copies to a GPU (nothing by default)."""


@dataclass
class Probe:
    """A set of test queries scored by greedy decoding and exact match of the completion.

    tokens:  (N, L) int64, the whole correct sequence (prompt + completion), right-padded.
    prompt_len: positions [0, prompt_len) are the question in every row, fed in one piece.
    given:   (N, L) bool, positions at or after prompt_len fed from ``tokens`` rather than
             generated: the rest of a longer row's question (prompts of different lengths), or
             e.g. the second relation of the interleaved CoT pattern.
    scored:  (N, L) bool, completion positions the model must produce (not given, not padding).
    stages:  stage name -> position (one int for every row, or an (N,) tensor of each row's
             position), for per-stage accuracies (e.g. bridge, tail, answer).
    teacher_forced: also report scores under teacher forcing (each position predicted from the
             true tokens before it; Feng et al. score LIS and edit distance this way): the
             share of scored tokens right, and with an ``answer`` stage the answer given the
             true trace. (Exact match of the whole completion under teacher forcing equals
             greedy exact match, so it is not reported twice.)
    """

    tokens: Tensor
    prompt_len: int
    given: Tensor
    scored: Tensor
    stages: dict[str, int | Tensor] = field(default_factory=dict)
    teacher_forced: bool = False

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subset(self, rows: Tensor) -> Probe:
        """The probe of the given rows (an index tensor), in that order."""
        stages = {k: p[rows] if isinstance(p, Tensor) else p for k, p in self.stages.items()}
        return replace(
            self,
            tokens=self.tokens[rows],
            given=self.given[rows],
            scored=self.scored[rows],
            stages=stages,
        )


def next_token_loss(logits: Tensor, batch: Batch) -> Tensor:
    """Mean cross-entropy over the positions the loss mask selects: logits (B, L, vocab) of the
    inputs tokens[:, :-1], targets tokens[:, 1:], mask loss_mask[:, 1:]."""
    return F.cross_entropy(logits[batch.mask].float(), batch.targets[batch.mask])


class EpochSampler:
    """Batch ``step`` = the next ``batch_size`` indices of a stream of epoch permutations, each
    permutation a function of (seed, epoch) only."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self._cached: tuple[int, Tensor] | None = None

    def permutation(self, epoch: int) -> Tensor:
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cached = (epoch, torch.randperm(self.size, generator=generator))
        return self._cached[1]

    def batch(self, step: int) -> Tensor:
        start, parts, needed = step * self.batch_size, [], self.batch_size
        while needed:
            epoch, offset = divmod(start, self.size)
            take = min(needed, self.size - offset)
            parts.append(self.permutation(epoch)[offset : offset + take])
            start, needed = start + take, needed - take
        return torch.cat(parts)


@dataclass
class TaskData(Task):
    """A token task: a fixed training set walked in per-epoch permutations, loss on the
    completion (next-token cross-entropy where the loss mask is set), probes scored by greedy
    decoding and exact match. Everything already on the CPU as tensors."""

    vocab: list[str]
    pad_id: int
    train_tokens: Tensor  # (N, L) int64
    train_loss_mask: Tensor  # (N, L) bool: True where tokens[:, t] is a training target
    probes: dict[str, Probe]
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Task config fields that the data itself decided (e.g. the CoT pattern of a dataset folder
    # made elsewhere); the trainer records them in the run's resolved config.
    resolved: dict[str, Any] = field(default_factory=dict)

    _sampler: EpochSampler | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def io(self) -> ModelIO:
        return ModelIO(self.max_seq_len, vocab_size=self.vocab_size)

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        key = (len(self.train_tokens), batch_size, seed)
        sampler = self._sampler
        if sampler is None or (sampler.size, sampler.batch_size, sampler.seed) != key:
            sampler = self._sampler = EpochSampler(*key)
        index = sampler.batch(step)
        tokens, mask = self.train_tokens[index], self.train_loss_mask[index]
        units = int((tokens != self.pad_id).sum())
        return Batch(tokens[:, :-1], tokens[:, 1:], mask[:, 1:], units)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        return next_token_loss(outputs, batch)

    def headline_probes(self) -> list[str]:
        preferred = [k for k in ("test_inferred_iid", "test_inferred_ood") if k in self.probes]
        return preferred or list(self.probes)[:2]

    def example_inputs(self, n: int) -> Tensor:
        return next(iter(self.probes.values())).tokens[:n]

    def pin_memory(self) -> None:
        self.train_tokens = self.train_tokens.pin_memory()
        self.train_loss_mask = self.train_loss_mask.pin_memory()

    @property
    def max_seq_len(self) -> int:
        lengths = [self.train_tokens.shape[1], *(p.tokens.shape[1] for p in self.probes.values())]
        return int(max(lengths))

    def fingerprint(self) -> str:
        """A short hash of every tensor: same config and seed must give the same value."""
        digest = hashlib.sha256()
        tensors = [self.train_tokens, self.train_loss_mask]
        for name in sorted(self.probes):
            probe = self.probes[name]
            digest.update(name.encode())
            tensors += [probe.tokens, probe.given, probe.scored]
        for tensor in tensors:
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def decode(self, ids: list[int] | Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, Tensor) else ids
        return " ".join(self.vocab[i] for i in ids if i != self.pad_id)


def as_probe(
    tokens: Tensor,
    prompt_len: int | Tensor,
    given: Tensor,
    pad_id: int,
    stages: dict[str, int | Tensor],
    teacher_forced: bool = False,
) -> Probe:
    """Builds a probe; scored = completion positions that are neither given nor padding.
    ``prompt_len``: one length for every row, or an (N,) tensor of each row's prompt length
    (the rest of a row's prompt after the shortest one is then given)."""
    positions = torch.arange(tokens.shape[1])
    lengths = torch.as_tensor(prompt_len).reshape(-1, 1)  # (N, 1) or (1, 1)
    in_prompt = (positions < lengths).expand_as(tokens)
    scored = ~in_prompt & ~given & (tokens != pad_id)
    shortest = int(lengths.min())
    given = given | (in_prompt & (positions >= shortest))
    return Probe(tokens, shortest, given, scored, stages, teacher_forced)


@dataclass
class RegressionProbe:
    """Fixed test prompts of a vector task, scored by squared error at every query position.

    inputs:     (N, L, input_dim) the prompts fed whole (no decoding: every target is read in
                one forward pass, each from the positions before it).
    targets:    (N, k, output_dim) the value to predict at each of k query positions.
    positions:  (k,) the output position that predicts each target.
    normalizer: squared errors are divided by it (e.g. the dimension d, as Garg et al. do).
    report_at:  numbers of in-context examples (0-based target index + 0 examples before it)
                whose error is also reported on its own as ``<probe>.k<n>``.
    """

    inputs: Tensor
    targets: Tensor
    positions: Tensor
    normalizer: float
    report_at: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def subset(self, rows: Tensor) -> RegressionProbe:
        """The probe of the given rows (an index tensor), in that order."""
        return replace(self, inputs=self.inputs[rows], targets=self.targets[rows])


def sample_probes(
    probes: dict[str, Probe] | dict[str, RegressionProbe], rows: int, seed: int = 0
) -> dict[str, Any]:
    """Each probe cut to at most ``rows`` rows: a random subset drawn once from ``seed`` and the
    probe's name, kept in the probe's order (the same subset at every call)."""
    sampled: dict[str, Any] = {}
    for name, probe in probes.items():
        if len(probe) <= rows:
            sampled[name] = probe
            continue
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        chosen = torch.randperm(len(probe), generator=generator)[:rows].sort().values
        sampled[name] = probe.subset(chosen)
    return sampled
