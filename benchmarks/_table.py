"""The tables the benchmarks print.

:func:`header` and :func:`row` are the old scripts' (median, p10, p90 and the ratio of
medians); :class:`Summary` and :class:`Report` serve ``python3 -m benchmarks``: every table
there has min, median, p90, p99 and max, the ratio of its median to a baseline measured in
the same run, and each target printed next to its measured ratio, met or not.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

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


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of sorted samples."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class Summary:
    """Order statistics of samples, in the samples' unit."""

    n: int
    min: float
    median: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: list[float]) -> Summary:
        ordered = sorted(samples)
        return cls(
            len(ordered),
            ordered[0],
            statistics.median(ordered),
            percentile(ordered, 0.9),
            percentile(ordered, 0.99),
            ordered[-1],
        )


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass
class Section:
    """One section's output, printed as it is made and kept for the JSON file."""

    key: str
    title: str
    tables: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    available: bool = True

    def __post_init__(self) -> None:
        print(self.title)

    def table(
        self,
        rows: list[tuple[str, list[float]]],
        baseline: str | None,
        *,
        unit: str = "ms",
        scale: float = 1e3,
        title: str = "",
        name_width: int = 44,
    ) -> dict[str, Summary]:
        """Prints one table: each row's samples (seconds, shown times ``scale``), the ratio
        of its median to the ``baseline`` row's.  Returns the summaries, by row name."""
        summaries = {name: Summary.of(samples) for name, samples in rows if samples}
        base = summaries[baseline].median if baseline in summaries else None
        if title:
            print(f"  {title}")
        columns = ("n", "min", "median", "p90", "p99", "max")
        print(
            f"  {'(' + unit + ')':<{name_width}} {columns[0]:>5}"
            + "".join(f" {c:>9}" for c in columns[1:])
            + f" {'ratio':>8}"
        )
        for name, _ in rows:
            summary = summaries.get(name)
            if summary is None:
                print(f"  {name:<{name_width}} {'—':>5}")
                continue
            values = (summary.min, summary.median, summary.p90, summary.p99, summary.max)
            ratio = "" if not base else f"{summary.median / base:7.2f}x"
            print(
                f"  {name:<{name_width}} {summary.n:5d}"
                + "".join(f" {_number(v * scale):>9}" for v in values)
                + f" {ratio:>8}"
            )
        self.tables.append(
            {
                "title": title,
                "unit": unit,
                "baseline": baseline,
                "rows": {
                    name: {
                        **{k: v * scale if k != "n" else v for k, v in asdict(s).items()},
                        "ratio": s.median / base if base else None,
                    }
                    for name, s in summaries.items()
                },
            }
        )
        return summaries

    def target(
        self,
        text: str,
        measured: float | None,
        limit: float,
        *,
        at_least: bool = False,
        unit: str = "x",
    ) -> None:
        """Prints a target, its measured value (a ratio unless ``unit`` says otherwise)
        and whether it is met."""
        sign = "≥" if at_least else "≤"
        if measured is None:
            verdict, shown = "not measured", "—"
        else:
            met = measured >= limit if at_least else measured <= limit
            verdict, shown = ("met" if met else "NOT MET"), f"{measured:.2f}{unit}"
        goal = f"{text} {sign} {limit:g}{unit}"
        print(f"  target: {goal}: measured {shown} -> {verdict}")
        self.targets.append(
            {"target": goal, "measured": measured, "unit": unit, "verdict": verdict}
        )

    def note(self, text: str) -> None:
        print(f"  note: {text}")
        self.notes.append(text)

    def unavailable(self, reason: str) -> None:
        print(f"  not available: {reason}")
        self.available = False
        self.notes.append(f"not available: {reason}")

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "available": self.available,
            "tables": self.tables,
            "targets": self.targets,
            "figures": self.figures,
            "notes": self.notes,
        }
