"""What each probe name in metrics.jsonl, the reports' panels and tables measures: one table of
descriptions (a pattern per name, the stage suffixes apart), read by every report's legend and
quoted by the docs."""

from __future__ import annotations

import re

# (pattern of a probe's name, what it measures); the first that matches describes it
PROBES: list[tuple[str, str]] = [
    (r"id_atomic", "atomic facts (h r t) seen in training: memorization"),
    (r"ood_atomic", "OOD atomic facts: trained as single facts, never inside a two-hop chain"),
    (r"train_inferred", "two-hop queries (h r1 r2) whose chains were trained on"),
    (
        r"test_inferred_iid",
        "held-out two-hop queries built from ID facts: in-distribution composition",
    ),
    (
        r"test_inferred_ood",
        "two-hop queries over OOD facts, trained as atomic facts only: OOD composition",
    ),
    (
        r"test_inferred_(\d+)hop_(iid|ood)",
        "held-out questions of \\1 hops (ID or OOD facts), answered directly in one pass",
    ),
    (
        r"len(\d+)",
        "COPY of strings of length \\1 (whole copy exact); longer than task.max_length: OOD",
    ),
    (r"test_len(\d+)", "dynamic-program instances of size \\1 (longer than trained: OOD)"),
    (r"test", "held-out test prompts (exact match; for in-context regression, the error)"),
]

# (suffix after the probe's name, what it measures)
STAGES: list[tuple[str, str]] = [
    (r"bridge(\d*)", "the generated bridge entity is right"),
    (r"tail", "the tail is right when the model continues from its own bridge"),
    (r"tail_given_true_bridge", "the tail is right when the true bridge is fed (teacher forcing)"),
    (r"first", "the first copied symbol is right (COPY)"),
    (r"last", "the last copied symbol is right, after the model's own copy so far (COPY)"),
    (r"answer", "the final answer is right (dynamic programs)"),
    (r"answer_given_true_trace", "the answer is right when the true trace is fed"),
    (r"token_accuracy_teacher_forced", "share of scored tokens right from the true prefix"),
    (r"k(\d+)", "the error after \\1 in-context examples (in-context regression)"),
]


def describe(key: str) -> str | None:
    """What the probe (``name``) or probe stage (``name.stage``) ``key`` measures; None for a
    name the table does not know."""
    name, _, stage = key.partition(".")
    probe = next((re.sub(p, d, name) for p, d in PROBES if re.fullmatch(p, name)), None)
    if not stage:
        return probe
    text = next((re.sub(p, d, stage) for p, d in STAGES if re.fullmatch(p, stage)), None)
    if text is None:
        return probe
    return f"{text} ({name})" if probe is None else f"{text}, on {name}"


def legend(keys: list[str]) -> list[str]:
    """``key: description`` for each key the table knows, in the order given."""
    return [f"{key}: {text}" for key in keys if (text := describe(key)) is not None]
