"""One measured workload of a side-by-side benchmark, and the JSON lines file that contains them.

Every figure of ``bench/versus.py`` is a ``Measurement``: what Cirrus did on one workload, what
the peer (Orthanc, or dcmtk's storescp for the gateway alone) did in the same run, the unit,
and whether a larger number is better. Workload modules return lists of them, the command
appends them to one file, and the report and plots are made from that file alone, so a run
can be reported again without measuring again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measurement:
    """The median of one workload for Cirrus and its peer, measured in the same run."""

    workload: str
    unit: str
    cirrus: float | None
    peer: str
    peer_value: float | None
    higher_is_better: bool
    # Instances stored in each archive when the workload ran, where the size matters.
    stored: int | None = None
    # The local backends that served Cirrus, for example "moto server, objects as files".
    backend: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Cirrus divided by the peer, in the workload's own unit."""
        if self.cirrus is None or not self.peer_value:
            return None
        return self.cirrus / self.peer_value


def append(path: Path, measurements: Iterable[Measurement]) -> None:
    """Add ``measurements`` to the JSON lines file at ``path``, creating it if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for measurement in measurements:
            out.write(json.dumps(asdict(measurement), sort_keys=True) + "\n")


def load(path: Path) -> Iterator[Measurement]:
    """Read back what ``append`` wrote, in order."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield Measurement(**json.loads(line))
