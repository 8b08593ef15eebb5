"""The verdict rule for a comparison over seeds, with the spread.

``verdict_from_seeds(a, b, margin)`` decides "a exceeds b by at least margin" (a claim such as
"the Transformer gains more from CoT than Mamba": a the GPT's per-seed gains, b the Mamba's):

- reproduces: the means meet it (mean(a) >= mean(b) + margin) and the spreads do not overlap
  (every seed of a at or above every seed of b + margin: min(a) >= max(b) + margin);
- does not reproduce: the means miss it (mean(a) < mean(b) + margin) and the spreads do not
  overlap the other way (max(a) < min(b) + margin);
- undecided otherwise (the spreads overlap: more seeds or a larger setting would decide), and
  when either side has fewer than ``min_seeds`` seeds (one seed has no spread to judge).

The spread is each side's range over seeds (min to max), the strictest reading of "does not
overlap"; with three seeds a side it is also what the reports show beside mean ± std.

``verdict_every_seed(on_means, per_seed)`` decides a rule checked on the means and in each seed
(a level reached, an order kept): reproduces when it holds on the means and in every seed, does
not reproduce when it fails on the means and in every seed, undecided when the seeds disagree
or fewer than ``min_seeds`` were checked (``on_means`` None: a rule read seed by seed only).
"""

from __future__ import annotations

from collections.abc import Sequence

from reasonlab.reporting.content import Verdict

RULE = (
    "a comparison over seeds (a exceeds b by a margin) reproduces when it holds for the means "
    "and every seed of a is at or above every seed of b plus the margin; it does not reproduce "
    "when it fails for the means and every seed of a is below every seed of b plus the margin; "
    "otherwise (the seeds' ranges overlap, or a side has fewer than 2 seeds) it is undecided"
)


def verdict_from_seeds(
    values_a: Sequence[float],
    values_b: Sequence[float],
    margin: float = 0.0,
    min_seeds: int = 2,
) -> tuple[Verdict, str]:
    """The verdict on "a exceeds b by at least ``margin``" over seeds (module docstring) and why,
    in a few words (empty when decided)."""
    if len(values_a) < min_seeds or len(values_b) < min_seeds:
        return "undecided", f" (fewer than {min_seeds} seeds a side: no spread to judge)"
    mean_a = sum(values_a) / len(values_a)
    mean_b = sum(values_b) / len(values_b) + margin
    if mean_a >= mean_b and min(values_a) >= max(values_b) + margin:
        return "reproduces", ""
    if mean_a < mean_b and max(values_a) < min(values_b) + margin:
        return "does not reproduce", ""
    return "undecided", " (the seeds' ranges overlap)"


def verdict_every_seed(
    on_means: bool | None, per_seed: Sequence[bool], min_seeds: int = 2
) -> tuple[Verdict, str]:
    """The verdict on a rule checked on the means and in each seed (module docstring) and why,
    in a few words (empty when decided)."""
    if len(per_seed) < min_seeds:
        return "undecided", f" (fewer than {min_seeds} seeds)"
    if on_means is not False and all(per_seed):
        return "reproduces", ""
    if not on_means and not any(per_seed):
        return "does not reproduce", ""
    return "undecided", " (the seeds disagree)"
