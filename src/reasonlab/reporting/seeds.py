"""A variant's runs over seeds: which variant a run belongs to, and its values summed up."""

from __future__ import annotations

import numpy as np


def variant_of(run_name: str) -> str:
    """'cot-interleaved-s1' -> 'cot-interleaved' (runs of one variant share a colour)."""
    head, _, seed = run_name.rpartition("-s")
    return head if head and seed.isdigit() else run_name


def mean_present(values: list[float | None]) -> float | None:
    """The mean of the values that exist (runs without one left out), or None if none does."""
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def spread(values: list[float | None], digits: int = 3, counted: str = "with a value") -> str:
    """'mean ± std (min–max)' over the values that exist, and how many exist when some don't;
    one value is shown alone, none as '–'."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return f"– (0/{len(values)} {counted})" if len(values) > 1 else "–"
    array = np.array(present)
    text = f"{array[0]:.{digits}f}"
    if len(array) > 1:
        text = (
            f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f} "
            f"({array.min():.{digits}f}–{array.max():.{digits}f})"
        )
    if len(present) < len(values):
        text += f", {len(present)}/{len(values)} {counted}"
    return text
