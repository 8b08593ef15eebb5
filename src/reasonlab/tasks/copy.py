"""COPY (Jelassi et al. 2024, "Repeat after me"; arXiv 2410.03810 compares Mamba on it) and
selective copying (the string's tokens scattered among noise tokens, as in mad-lab).

copy:       ``s_1 .. s_n <sep> s_1 .. s_n <eos>``
selective:  the n symbols in order at random places among ``noise_tokens`` ``<noise>`` tokens,
            then ``<sep> s_1 .. s_n <eos>``

Strings are uniform over ``vocab_size`` symbols. Training lengths are uniform in
[min_length, max_length]; there is a probe ``len{n}`` per test length. De-duplication is by the
symbol string: a probe holds distinct strings and no probe string is ever trained on (for
selective, whatever the noise placement); training strings may repeat (short lengths have few).
Each probe length draws from its own seeded stream, so probes do not depend on num_train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from reasonlab.config import ConfigError, CopyTaskConfig
from reasonlab.tasks.base import Probe, TaskData, as_probe

PAD, SEP, EOS, NOISE = "<pad>", "<sep>", "<eos>", "<noise>"
# Spaces up to this many strings are handled as integer codes (exact sampling without the probe's
# strings); larger ones by rejection, where a probe (<= 1e6 strings) is at most a quarter.
SMALL_SPACE = 1 << 22
MAX_TOKENS = 400_000_000  # per tensor: about 3 GB of int64


@dataclass(frozen=True)
class CopyVocab:
    """Token ids: ``<pad> <sep> <eos> [<noise>]`` then the symbols."""

    tokens: tuple[str, ...]
    num_symbols: int
    selective: bool

    @classmethod
    def build(cls, num_symbols: int, selective: bool) -> CopyVocab:
        if num_symbols <= 26:
            symbols = [chr(ord("a") + i) for i in range(num_symbols)]
        else:
            symbols = [f"s{i}" for i in range(num_symbols)]
        specials = [PAD, SEP, EOS] + ([NOISE] if selective else [])
        return cls(tuple(specials + symbols), num_symbols, selective)

    @property
    def pad_id(self) -> int:
        return self.tokens.index(PAD)

    @property
    def sep_id(self) -> int:
        return self.tokens.index(SEP)

    @property
    def eos_id(self) -> int:
        return self.tokens.index(EOS)

    @property
    def noise_id(self) -> int:
        return self.tokens.index(NOISE)

    @property
    def first_symbol(self) -> int:
        return len(self.tokens) - self.num_symbols


# ----------------------------------------------------------------------------- strings


def space_size(num_symbols: int, length: int) -> int:
    """Distinct strings of a length; capped at 2**64, more than any count asked for."""
    if length * math.log2(num_symbols) >= 64:
        return 1 << 64
    return num_symbols**length


def _to_codes(rows: np.ndarray, num_symbols: int) -> np.ndarray:
    powers = num_symbols ** np.arange(rows.shape[1] - 1, -1, -1, dtype=np.int64)
    return rows @ powers


def _from_codes(codes: np.ndarray, length: int, num_symbols: int) -> np.ndarray:
    powers = num_symbols ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return (codes[:, None] // powers) % num_symbols


def _rows_in(rows: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(n,) bool: whether each row of ``rows`` is a row of ``members``."""
    if len(members) == 0:
        return np.zeros(len(rows), bool)
    _, inverse = np.unique(np.concatenate([members, rows]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return np.isin(inverse[len(members) :], inverse[: len(members)])


def distinct_strings(
    rng: np.random.Generator, count: int, length: int, num_symbols: int
) -> np.ndarray:
    """(count, length) distinct uniform strings of symbol indices, in draw order."""
    space = space_size(num_symbols, length)
    if space <= SMALL_SPACE:
        return _from_codes(rng.choice(space, count, replace=False), length, num_symbols)
    rows = np.empty((0, length), np.int64)
    while len(rows) < count:
        rows = np.concatenate([rows, rng.integers(num_symbols, size=(count - len(rows), length))])
        _, first = np.unique(rows, axis=0, return_index=True)
        rows = rows[np.sort(first)]
    return rows


def strings_except(
    rng: np.random.Generator, count: int, length: int, num_symbols: int, excluded: np.ndarray
) -> np.ndarray:
    """(count, length) uniform strings (repeats allowed) none of which is a row of ``excluded``."""
    space = space_size(num_symbols, length)
    if len(excluded) and space <= SMALL_SPACE:
        # the r-th allowed code is r + (excluded codes e_i with e_i - i <= r), e sorted
        codes = np.sort(_to_codes(excluded, num_symbols))
        ranks = rng.integers(space - len(codes), size=count)
        skipped = np.searchsorted(codes - np.arange(len(codes)), ranks, side="right")
        return _from_codes(ranks + skipped, length, num_symbols)
    rows = rng.integers(num_symbols, size=(count, length))
    bad = _rows_in(rows, excluded)
    while bad.any():
        rows[bad] = rng.integers(num_symbols, size=(int(bad.sum()), length))
        bad[bad] = _rows_in(rows[bad], excluded)
    return rows


# ----------------------------------------------------------------------------- sequences


def sequence_length(length: int, noise: int) -> int:
    """Tokens of one example: input (string + noise), <sep>, the copy, <eos>."""
    return 2 * length + noise + 2


def encode(
    strings: np.ndarray, noise: int, vocab: CopyVocab, rng: np.random.Generator
) -> np.ndarray:
    """(n, L) token ids of strings of one length; selective inputs scatter the symbols, in
    order, over uniformly random places among ``noise`` noise tokens."""
    count, length = strings.shape
    symbols = strings + vocab.first_symbol
    if noise:
        places = np.sort(rng.random((count, length + noise)).argsort(axis=1)[:, :length], axis=1)
        inputs = np.full((count, length + noise), vocab.noise_id, np.int64)
        np.put_along_axis(inputs, places, symbols, axis=1)
    else:
        inputs = symbols
    sep = np.full((count, 1), vocab.sep_id, np.int64)
    eos = np.full((count, 1), vocab.eos_id, np.int64)
    return np.concatenate([inputs, sep, symbols, eos], axis=1).astype(np.int64)


def build_probe(
    strings: np.ndarray, noise: int, vocab: CopyVocab, rng: np.random.Generator
) -> Probe:
    """A probe of strings of one length: prompt = input + <sep>, scored = the copy + <eos>."""
    tokens = torch.from_numpy(encode(strings, noise, vocab, rng))
    prompt_len = strings.shape[1] + noise + 1
    stages = {"first": prompt_len, "last": prompt_len + strings.shape[1] - 1}
    given = torch.zeros(tokens.shape, dtype=torch.bool)
    return as_probe(tokens, prompt_len, given, vocab.pad_id, stages, teacher_forced=False)


def training_set(
    lengths: np.ndarray,
    strings: dict[int, np.ndarray],
    noise: int,
    vocab: CopyVocab,
    rng: np.random.Generator,
) -> tuple[Tensor, Tensor]:
    """Right-padded tokens (N, L) of rows with the given lengths and their loss masks (the copy
    and <eos>)."""
    width = sequence_length(int(lengths.max()), noise)
    tokens = np.full((len(lengths), width), vocab.pad_id, np.int64)
    for length, rows in strings.items():
        tokens[lengths == length, : sequence_length(length, noise)] = encode(
            rows, noise, vocab, rng
        )
    positions = np.arange(width)
    prompt = lengths[:, None] + noise + 1
    mask = (positions >= prompt) & (positions < prompt + lengths[:, None] + 1)
    return torch.from_numpy(tokens), torch.from_numpy(mask)


# ----------------------------------------------------------------------------- checks


def check_config(cfg: CopyTaskConfig) -> None:
    """ConfigError (one line, naming the field) when the strings asked for cannot exist."""
    symbols = cfg.vocab_size
    for length in cfg.test_lengths:
        space = space_size(symbols, length)
        if cfg.num_test > space:
            raise ConfigError(
                f"task.num_test: only {space} distinct strings of length {length} over "
                f"{symbols} symbols, {cfg.num_test} asked for"
            )
        if cfg.num_test == space and cfg.min_length <= length <= cfg.max_length:
            raise ConfigError(
                f"task.num_test: the len{length} probe takes all {space} strings of length "
                f"{length} over {symbols} symbols, none is left for training"
            )
    train_tokens = cfg.num_train * sequence_length(cfg.max_length, cfg.noise_tokens)
    if train_tokens > MAX_TOKENS:
        raise ConfigError(
            f"task.num_train: {cfg.num_train:,} strings up to length {cfg.max_length} make "
            f"{train_tokens:,} tokens, more than the {MAX_TOKENS:,} reasonlab builds"
        )
    test_tokens = cfg.num_test * sequence_length(max(cfg.test_lengths), cfg.noise_tokens)
    if test_tokens > MAX_TOKENS:
        raise ConfigError(
            f"task.num_test: {cfg.num_test:,} strings of length {max(cfg.test_lengths)} make "
            f"{test_tokens:,} tokens, more than the {MAX_TOKENS:,} reasonlab builds"
        )


# ----------------------------------------------------------------------------- the task


def build_copy(cfg: CopyTaskConfig) -> TaskData:
    check_config(cfg)
    vocab = CopyVocab.build(cfg.vocab_size, cfg.variant == "selective")
    noise = cfg.noise_tokens
    probe_strings: dict[int, np.ndarray] = {}
    probes: dict[str, Probe] = {}
    for length in cfg.test_lengths:
        rng = np.random.default_rng([cfg.seed, 1, length])
        probe_strings[length] = distinct_strings(rng, cfg.num_test, length, cfg.vocab_size)
        probes[f"len{length}"] = build_probe(probe_strings[length], noise, vocab, rng)
    rng = np.random.default_rng([cfg.seed, 0])
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=cfg.num_train)
    empty = np.empty((0, 0), np.int64)
    train_strings = {
        int(length): strings_except(
            rng,
            int((lengths == length).sum()),
            int(length),
            cfg.vocab_size,
            probe_strings.get(int(length), empty),
        )
        for length in np.unique(lengths)
    }
    tokens, mask = training_set(lengths, train_strings, noise, vocab, rng)
    data = TaskData(
        vocab=list(vocab.tokens),
        pad_id=vocab.pad_id,
        train_tokens=tokens,
        train_loss_mask=mask,
        probes=probes,
        notes=notes(cfg, probe_strings),
    )
    data.stats = statistics(cfg, lengths, train_strings, data)
    return data


def notes(cfg: CopyTaskConfig, probe_strings: dict[int, np.ndarray]) -> list[str]:
    lines = []
    if cfg.variant == "selective":
        lines.append(
            f"selective copy: {cfg.noise_tokens} <noise> tokens among the symbols of each input; "
            "the model writes the symbols in order after <sep>"
        )
    ood = [n for n in cfg.test_lengths if n > cfg.max_length]
    if ood:
        lines.append(f"probes of lengths {ood} are longer than max_length={cfg.max_length} (OOD)")
    for length, strings in probe_strings.items():
        space = space_size(cfg.vocab_size, length)
        if cfg.min_length <= length <= cfg.max_length and len(strings) * 10 >= space:
            lines.append(
                f"len{length}: the probe holds {len(strings)} of the {space} strings of that "
                "length; training strings of that length come from the rest"
            )
    return lines


def statistics(
    cfg: CopyTaskConfig, lengths: np.ndarray, strings: dict[int, np.ndarray], data: TaskData
) -> dict[str, int]:
    distinct = sum(len(np.unique(rows, axis=0)) for rows in strings.values())
    return {
        "symbols": cfg.vocab_size,
        "vocab_size": data.vocab_size,
        "noise_tokens": cfg.noise_tokens,
        "train_strings": len(lengths),
        "train_distinct_strings": distinct,
        "train_min_length": int(lengths.min()),
        "train_max_length": int(lengths.max()),
        "probes": len(data.probes),
        "ood_probes": sum(n > cfg.max_length for n in cfg.test_lengths),
        "test_strings": sum(len(p) for p in data.probes.values()),
        "longest_sequence": data.max_seq_len,
    }


# ----------------------------------------------------------------------------- analysis helpers


def _per_row(position: int | Tensor, rows: int) -> Tensor:
    return torch.as_tensor(position).reshape(-1).expand(rows)


def copy_positions(probe: Probe) -> Tensor:
    """(N, n) positions of each row's copied tokens, in order (from the first/last stages)."""
    first = _per_row(probe.stages["first"], len(probe))
    last = _per_row(probe.stages["last"], len(probe))
    widths = last - first + 1
    if not bool((widths == widths[0]).all()):
        raise ValueError("copy_positions needs a probe whose rows copy strings of one length")
    return first[:, None] + torch.arange(int(widths[0]))


def source_positions(probe: Probe, vocab: list[str]) -> Tensor:
    """(N, n) for each copied token, the input position holding the symbol it copies: the
    input's non-noise positions, in order (the input ends at <sep>, just before ``first``)."""
    targets = copy_positions(probe)
    in_input = torch.arange(probe.tokens.shape[1]) < targets[:, :1] - 1
    if NOISE in vocab:
        in_input &= probe.tokens != vocab.index(NOISE)
    if not bool((in_input.sum(dim=1) == targets.shape[1]).all()):
        raise ValueError("source_positions: an input does not hold exactly the copied symbols")
    return in_input.nonzero()[:, 1].reshape(targets.shape)


def position_accuracy(generated: Tensor, probe: Probe) -> list[float]:
    """Accuracy at copy index k = 0..n-1: the share of rows whose k-th copied token is right in
    ``generated`` (N, L), the full sequence (prompt and completion)."""
    positions = copy_positions(probe).to(generated.device)
    truth = probe.tokens.to(generated.device).gather(1, positions)
    right = generated.gather(1, positions) == truth
    return right.float().mean(dim=0).tolist()
