"""The table every benchmark prints: median, p10, p90 in ms and the ratio to a baseline."""

from __future__ import annotations

import statistics

WIDTH = 34


def header() -> str:
    return f"{'':<{WIDTH}} {'median ms':>9} {'p10 ms':>9} {'p90 ms':>9} {'ratio':>9}"


def row(name: str, samples: list[float], baseline: float) -> str:
    """One line: ``samples`` in seconds; the ratio is of their median to ``baseline``."""
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p10 = ordered[len(ordered) // 10]
    p90 = ordered[(len(ordered) * 9) // 10]
    return (
        f"{name:<{WIDTH}} {median * 1e3:9.3f} {p10 * 1e3:9.3f} {p90 * 1e3:9.3f}"
        f" {median / baseline:8.2f}x"
    )
