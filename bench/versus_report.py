"""The table of ``bench/versus.py``, made from ``bench.results.Measurement`` records.

Each row of the table shows one workload at one archive size: Cirrus's median, the peer's,
their ratio and, where the performance goals set one, the target and whether it is met.
The targets find their workloads by the start of the name, case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.results import Measurement

# A study search may grow this much in latency from the smallest to the largest archive.
FLATNESS_LIMIT = 1.2
FLATNESS_PREFIX = "qido study search"

HEADER = ("workload", "stored", "Cirrus", "peer", "peer value", "unit", "ratio", "target", "met")


@dataclass(frozen=True)
class Goal:
    """A performance target for every workload whose name starts with ``prefix``.

    ``ratio`` bounds Cirrus / peer: at least it when higher is better, at most it otherwise.
    ``limit`` bounds Cirrus's own value in the workload's unit, in the same direction.
    """

    prefix: str
    ratio: float | None = None
    limit: float | None = None

    def applies_to(self, workload: str) -> bool:
        return workload.lower().startswith(self.prefix.lower())

    def describe(self, measurement: Measurement) -> str:
        sign = ">=" if measurement.higher_is_better else "<="
        if self.ratio is not None:
            return f"ratio {sign} {self.ratio:g}"
        return f"{sign} {self.limit:g} {measurement.unit}"

    def met(self, measurement: Measurement) -> bool | None:
        """Return whether ``measurement`` meets the goal, or None when a value is missing."""
        value = measurement.ratio if self.ratio is not None else measurement.cirrus
        bound = self.ratio if self.ratio is not None else self.limit
        if value is None or bound is None:
            return None
        return value >= bound if measurement.higher_is_better else value <= bound


# The first goal whose prefix starts a workload's name applies to it.
GOALS: tuple[Goal, ...] = (
    Goal("C-STORE, gateway alone", ratio=0.5),
    Goal("C-STORE, ", ratio=1.0),
    Goal("STOW-RS", ratio=1.0),
    Goal("C-STORE to visible in QIDO, p95", limit=250.0),
    Goal(FLATNESS_PREFIX, ratio=1.0),
    Goal("series metadata", ratio=0.1),
    Goal("WADO-RS series", ratio=0.5),
    Goal("Lambda handler import", limit=300.0),
)


@dataclass(frozen=True)
class Row:
    """One line of the printed table."""

    workload: str
    stored: int | None
    cirrus: float | None
    peer: str
    peer_value: float | None
    unit: str
    ratio: float | None
    target: str
    met: bool | None


def latest(measurements: Iterable[Measurement]) -> list[Measurement]:
    """Keep the last measurement of each workload and size, in the order first seen.

    A results file that several runs appended to then reports the newest figures.
    """
    kept: dict[tuple[str, int | None], Measurement] = {}
    for measurement in measurements:
        kept[(measurement.workload, measurement.stored)] = measurement
    return list(kept.values())


def goal_for(workload: str) -> Goal | None:
    return next((goal for goal in GOALS if goal.applies_to(workload)), None)


def table_rows(measurements: Iterable[Measurement]) -> list[Row]:
    """Build the table's rows, then one growth row for each study search measured at two sizes."""
    current = latest(measurements)
    rows = []
    for measurement in current:
        goal = goal_for(measurement.workload)
        if goal is not None and goal.ratio is not None and measurement.peer_value is None:
            goal = None  # a Cirrus-only row, such as the client that leaves Nagle on
        rows.append(
            Row(
                workload=measurement.workload,
                stored=measurement.stored,
                cirrus=measurement.cirrus,
                peer=measurement.peer,
                peer_value=measurement.peer_value,
                unit=measurement.unit,
                ratio=measurement.ratio,
                target=goal.describe(measurement) if goal else "",
                met=goal.met(measurement) if goal else None,
            )
        )
    return rows + flatness_rows(current)


def flatness_rows(measurements: Sequence[Measurement]) -> list[Row]:
    """Compare each study search's latency at the largest archive with the smallest.

    Cirrus's growth and the peer's are both shown. The target bounds Cirrus's growth.
    """
    by_workload: dict[str, list[Measurement]] = {}
    for measurement in measurements:
        if measurement.stored is not None and measurement.workload.lower().startswith(
            FLATNESS_PREFIX
        ):
            by_workload.setdefault(measurement.workload, []).append(measurement)
    rows = []
    for workload, sized in by_workload.items():
        if len(sized) < 2:
            continue
        sized.sort(key=lambda measurement: measurement.stored or 0)
        smallest, largest = sized[0], sized[-1]
        growth = _quotient(largest.cirrus, smallest.cirrus)
        rows.append(
            Row(
                workload=f"{workload}, growth from {smallest.stored:,} to {largest.stored:,}",
                stored=largest.stored,
                cirrus=growth,
                peer=smallest.peer,
                peer_value=_quotient(largest.peer_value, smallest.peer_value),
                unit="x",
                ratio=None,
                target=f"Cirrus <= {FLATNESS_LIMIT:g}",
                met=None if growth is None else growth <= FLATNESS_LIMIT,
            )
        )
    return rows


def _quotient(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def format_value(value: float | None) -> str:
    """Format a figure with three significant digits or more, or "-" when missing."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def format_table(rows: Sequence[Row]) -> str:
    """Render ``rows`` as a plain-text table with aligned columns."""
    header = (
        "workload",
        "stored",
        "Cirrus",
        "peer",
        "peer value",
        "unit",
        "ratio",
        "target",
        "met",
    )
    lines = [header]
    for row in rows:
        met = ""
        if row.met is not None:
            met = "yes" if row.met else "no"
        lines.append(
            (
                row.workload,
                "" if row.stored is None else f"{row.stored:,}",
                format_value(row.cirrus),
                row.peer,
                format_value(row.peer_value),
                row.unit,
                format_value(row.ratio),
                row.target,
                met,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADER))]
    numeric = {1, 2, 4, 6}
    text = []
    for line in lines:
        cells = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
    return "\n".join(text)
