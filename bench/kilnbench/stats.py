"""Summary statistics. Pure Python (no numpy) so the report generator and its tests run anywhere."""

import math
import random


def summary(samples):
    """min/median/p90/max of a list of numbers (None entries ignored).

    Nearest-rank p90 and the median of an even count as the mean of the middle two: the same
    rules as `kiln bench startup` (KilnCore/Bench/StartupComparison.swift), so figures agree.
    """
    values = sorted(v for v in samples if v is not None)
    if not values:
        return {"count": 0, "min": None, "median": None, "p90": None, "max": None}
    n = len(values)
    middle = n // 2
    median = values[middle] if n % 2 else (values[middle - 1] + values[middle]) / 2
    return {
        "count": n,
        "min": values[0],
        "median": median,
        "p90": percentile(values, 90),
        "max": values[-1],
    }


def percentile(samples, p):
    """Nearest-rank percentile (p in 0..100) of a list of numbers."""
    values = sorted(v for v in samples if v is not None)
    if not values:
        return None
    rank = math.ceil(p / 100 * len(values)) - 1
    return values[max(0, min(len(values) - 1, rank))]


def median(samples):
    return summary(samples)["median"]


def spread(samples):
    """Noise indicators: interquartile range relative to the median, and max/min."""
    values = sorted(v for v in samples if v is not None)
    if len(values) < 2:
        return {"iqr_pct": None, "max_over_min": None}
    q1, q3 = percentile(values, 25), percentile(values, 75)
    med = median(values)
    return {
        "iqr_pct": (q3 - q1) / med * 100 if med else None,
        "max_over_min": values[-1] / values[0] if values[0] else None,
    }


def paired_ratios(samples_by_round, baseline_by_round):
    """Ratio method/baseline for every round in which both ran (pair by pair, not median/median)."""
    ratios = []
    for round_number, value in sorted(samples_by_round.items()):
        base = baseline_by_round.get(round_number)
        if value is not None and base:
            ratios.append(value / base)
    return ratios


def median_interval(samples, level=0.95, resamples=2000, seed=0x6B696C6E):
    """Percentile bootstrap interval of the median: the samples resampled with replacement
    `resamples` times (seeded: the same samples always give the same interval), the middle
    `level` of the resampled medians kept. `kiln bench` prints the same kind of interval for its
    ratios (KilnBench/RatioInterval.swift). (None, None) without samples."""
    values = [v for v in samples if v is not None]
    if not values:
        return None, None
    generator = random.Random(seed)
    medians = sorted(median([generator.choice(values) for _ in values]) for _ in range(resamples))
    tail = (1 - level) / 2 * 100
    return percentile(medians, tail), percentile(medians, 100 - tail)
