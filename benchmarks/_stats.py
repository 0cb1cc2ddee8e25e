"""Summaries of timing samples and the tables the suite prints."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Summary:
    """Order statistics of one series, in milliseconds."""

    count: int
    min: float
    median: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: list[float]) -> Summary:
        ordered = sorted(seconds)
        if not ordered:
            raise ValueError("no samples")

        def at(fraction: float) -> float:
            return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1e3

        return cls(
            len(ordered),
            ordered[0] * 1e3,
            statistics.median(ordered) * 1e3,
            at(0.9),
            at(0.99),
            ordered[-1] * 1e3,
        )

    def json(self) -> dict[str, float]:
        return asdict(self)


NAME = 44


def header(unit: str = "ms") -> str:
    columns = ("min", "median", "p90", "p99", "max")
    return (
        f"{'':<{NAME}} {'n':>5} "
        + " ".join(f"{c + ' ' + unit:>10}" for c in columns)
        + "     ratio"
    )


def row(name: str, summary: Summary, baseline: Summary | None = None) -> str:
    values = (summary.min, summary.median, summary.p90, summary.p99, summary.max)
    ratio = f"{summary.median / baseline.median:8.2f}x" if baseline is not None else ""
    return (
        f"{name:<{NAME}} {summary.count:>5} "
        + " ".join(f"{value:10.3f}" for value in values)
        + f" {ratio}"
    )


def verdict(what: str, measured: float, target: float, *, at_most: bool = True) -> str:
    """One target line: ``what`` is measured/target with the comparison it must meet."""
    met = measured <= target if at_most else measured >= target
    sign = "<=" if at_most else ">="
    return f"  target: {what} {measured:.2f} {sign} {target:.2f}: {'met' if met else 'NOT met'}"


def target(what: str, measured: float, goal: float, *, at_most: bool = True) -> dict[str, object]:
    met = measured <= goal if at_most else measured >= goal
    return {"what": what, "measured": measured, "target": goal, "at_most": at_most, "met": met}
