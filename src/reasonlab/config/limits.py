"""The bounds reasonlab keeps to, stated once: the largest counts a config may ask for, the
longest name, the size of a YAML document, and how much of a user's value an error message
shows (``shown``: a bounded rendering, cut with "... (N chars)").

A value past a bound is a ConfigError naming the key, never a crash or a run that cannot end.
"""

from __future__ import annotations

import reprlib
from typing import Any

MAX_STEPS = 100_000_000  # train.steps, warmup_steps, eval.every, curriculum stages
MAX_BATCH = 1_048_576  # train.batch_size, eval.batch_size
MAX_WIDTH = 65_536  # model.d_model, n_heads, dt_rank
MAX_MLP = 1_048_576  # model.d_mlp
MAX_SEED = 2**63 - 1  # torch and numpy take 64-bit seeds
MAX_ITEMS = 10_000_000  # training examples, rows sampled per probe
MAX_ENTITIES = 1_000_000  # task.num_entities, num_relations, out_degree
MAX_NAME = 200  # run, config and sweep names (a folder name stays below 255 bytes)
MAX_LIST = 1_000  # test lengths and other lists of a config
MAX_TRIALS = 10_000  # trials of a sweep, unless ``reasonlab sweep --max-trials N`` raises it
MAX_YAML_VALUES = 100_000  # values of one YAML document, each alias counted where it is used
MAX_SHOWN = 200  # characters of a user's value quoted in an error message

# Bounded depth and items, so that a deep or self-sharing structure (a YAML alias bomb) is
# rendered in a few hundred characters without ever being expanded.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 8, 8, 8
_REPR.maxset, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 8, MAX_SHOWN, MAX_SHOWN, 40


def cut(text: str, limit: int = MAX_SHOWN) -> str:
    """``text``, or its first ``limit`` characters and "... (N chars)" when it is longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} chars)"


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """A user's value as an error message quotes it: its repr, at most about ``limit``
    characters; a long string says its length, a container its number of items."""
    if isinstance(value, str):
        return (
            repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value):,} chars)"
        )
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr fails: name its type
        return f"a {type(value).__name__}"
    if not isinstance(value, (list, tuple, dict, set)):
        return cut(text, limit)
    # A container's rendering is already bounded (not its real length): say how many items.
    text = text if len(text) <= limit else f"{text[:limit]}..."
    return f"{text} ({len(value):,} items)" if "..." in text else text
