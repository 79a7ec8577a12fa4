"""PNG plots of ``bench/versus.py``'s measurements, drawn with matplotlib's Agg backend.

``throughput.png`` and ``latency.png`` draw the median of each sized workload against the
instances stored, Cirrus as a solid line and its peer dashed in the same colour.
``ingest.png`` is a bar chart of the throughput workloads measured without a size: ingest and
the gateway alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from bench.results import Measurement
from bench.versus_report import latest

INGEST_PLOT = "ingest.png"
THROUGHPUT_PLOT = "throughput.png"
LATENCY_PLOT = "latency.png"


def write_plots(measurements: Sequence[Measurement], folder: Path) -> list[Path]:
    """Write every plot that has data into ``folder``; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    current = latest(measurements)
    written = []
    unsized = [m for m in current if m.stored is None and m.higher_is_better]
    if unsized:
        written.append(_bar_chart(unsized, folder / INGEST_PLOT))
    for higher_is_better, name, label in (
        (True, THROUGHPUT_PLOT, "throughput"),
        (False, LATENCY_PLOT, "latency"),
    ):
        # The p95 lines would double an already long legend, so the plots draw medians.
        sized = [
            m
            for m in current
            if m.stored is not None
            and m.higher_is_better == higher_is_better
            and not m.workload.endswith(", p95")
        ]
        if sized:
            written.append(_against_stored(sized, folder / name, label))
    return written


def _bar_chart(measurements: Sequence[Measurement], path: Path) -> Path:
    positions = np.arange(len(measurements))
    width = 0.4
    figure, axes = plt.subplots(figsize=(10, 1.5 + 0.6 * len(measurements)))
    cirrus = [m.cirrus or 0.0 for m in measurements]
    peers = [m.peer_value or 0.0 for m in measurements]
    axes.barh(positions - width / 2, cirrus, width, label="Cirrus")
    axes.barh(positions + width / 2, peers, width, label="peer (Orthanc or storescp)")
    axes.set_yticks(positions, [_bar_label(m) for m in measurements])
    axes.invert_yaxis()
    axes.set_xlabel(", ".join(sorted({m.unit for m in measurements})))
    axes.set_title("Ingest, median of the repetitions (higher is better)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _against_stored(measurements: Sequence[Measurement], path: Path, label: str) -> Path:
    by_workload: dict[str, list[Measurement]] = {}
    for measurement in measurements:
        by_workload.setdefault(measurement.workload, []).append(measurement)
    units = sorted({m.unit for m in measurements})
    figure, axes = plt.subplots(figsize=(13, 6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, (workload, points) in enumerate(by_workload.items()):
        points.sort(key=lambda m: m.stored or 0)
        stored = [m.stored for m in points]
        colour = colours[number % len(colours)]
        axes.plot(stored, [m.cirrus for m in points], "o-", color=colour, label=workload)
        axes.plot(
            stored,
            [m.peer_value for m in points],
            "s--",
            color=colour,
            label=f"{workload} ({points[0].peer})",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("instances stored")
    axes.set_ylabel(", ".join(units))
    axes.set_title(f"{label.capitalize()} against archive size: Cirrus solid, peer dashed")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _bar_label(measurement: Measurement) -> str:
    if measurement.peer_value is None:
        return f"{measurement.workload} (Cirrus only)"
    return f"{measurement.workload} (vs {measurement.peer})"
