"""Paired statistics of the speed benchmarks: medians of per-round ratios, their bootstrap intervals, quartiles.

Single timings on a shared machine swing by 10-30%, so every comparison here is paired: two configurations timed
in the same round give one ratio, and the median over rounds is the result.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence


def paired_median(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of `a[r] / b[r]` (two lists of times taken in the same rounds)."""
    return statistics.median(x / y for x, y in zip(a, b))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles of `values` (a single value is its own quartiles)."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def describe(values: Sequence[float]) -> str:
    """"median 1.012 (quartiles 0.998-1.025)": how the A/B scripts print a list of paired ratios."""
    low, high = quartiles(values)
    return f"median {statistics.median(values):.3f} (quartiles {low:.3f}-{high:.3f})"


def ratios(rounds: list[dict[str, float]], a: str, b: str) -> list[float]:
    """rounds[r][a] / rounds[r][b] for every round that has both."""
    return [r[a] / r[b] for r in rounds if a in r and b in r]


def paired(rounds: list[dict[str, float]], a: str, b: str) -> float | None:
    """Median over rounds of rounds[r][a] / rounds[r][b] (None when either is missing)."""
    values = ratios(rounds, a, b)
    return statistics.median(values) if values else None


def paired_ci(rounds: list[dict[str, float]], a: str, b: str, level: float = 0.90,
              resamples: int = 2000) -> tuple[float, float] | None:
    """Bootstrap `level` interval of `paired(rounds, a, b)`: rounds resampled with replacement (seeded)."""
    values = ratios(rounds, a, b)
    if len(values) < 3:
        return None
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1 - tail) * resamples))]


def verdict(value: float, ci: tuple[float, float] | None, goal: float) -> str:
    """'yes' / 'NO' when the whole interval is on one side of the goal, else which side the median is on."""
    if ci is None:
        return "yes" if value <= goal else "NO"
    if ci[1] <= goal:
        return "yes"
    if ci[0] > goal:
        return "NO"
    return f"within noise ({'median meets it' if value <= goal else 'median misses it'})"

