"""Gateway metrics as CloudWatch embedded metric format (EMF) lines on standard output.

The gateway is a long-running container, not a Lambda function, so nothing flushes metrics at
the end of an invocation. ``GatewayMetrics`` counts in memory instead and writes what it
counted every ``interval_seconds`` and once more at stop. Each flush writes one JSON line per
dimension set, built by Powertools' ``EphemeralMetrics`` (which keeps no state shared between
instances, unlike ``Metrics``):

- with the gateway's dimensions: ``AssociationsAccepted``, ``AssociationsRejected``,
  ``AssociationsAborted``, ``InstancesStored``, ``StoredBytes`` (counts since the last flush),
  ``ActiveAssociations`` and ``SpoolBytes`` (values at the flush);
- with ``Status`` added, one line per C-STORE failure status sent since the last flush:
  ``StoreFailures``.

On ECS the awslogs driver sends standard output to CloudWatch Logs, which extracts the
metrics from these lines. The counts come from pynetdicom's events, so every C-STORE response
is counted, including those that pynetdicom itself sends when a handler fails.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TextIO
from weakref import WeakSet

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.events import Event, EventHandlerType

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE: Final = "Cirrus"
SERVICE: Final = "cirrus-gateway"
DEFAULT_INTERVAL_SECONDS: Final = 60.0
# Warning statuses of the Storage Service Class (PS3.4 B.2.3) store the instance too.
_STORED_STATUSES: Final = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


@dataclass
class _Counts:
    accepted: int = 0
    rejected: int = 0
    aborted: int = 0
    stored: int = 0
    stored_bytes: int = 0
    failures: Counter[int] = field(default_factory=Counter)


class GatewayMetrics:
    """Counters of one gateway, written as EMF lines to ``stream`` (standard output).

    ``gauges`` returns the values that are read at each flush rather than counted, by name:
    ``ActiveAssociations`` and ``SpoolBytes`` in the gateway.
    """

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        dimensions: Mapping[str, str] | None = None,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        stream: TextIO | None = None,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"metrics interval {interval_seconds} s must be positive")
        self.namespace = namespace
        self.dimensions = dict(dimensions or {})
        self.interval_seconds = interval_seconds
        self.gauges: Callable[[], Mapping[str, int]] = dict
        self._stream = stream
        self._lock = threading.Lock()
        self._counts = _Counts()
        self._accepted: WeakSet[Association] = WeakSet()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def event_handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_DIMSE_SENT, self._on_dimse_sent),
        ]

    def add_stored_bytes(self, size: int) -> None:
        with self._lock:
            self._counts.stored_bytes += size

    def start(self) -> None:
        """Start flushing every ``interval_seconds`` in a daemon thread."""
        if self._timer is not None:
            return
        self._timer = threading.Thread(target=self._run, name="gateway-metrics", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        """Stop the timer and flush what was counted since the last flush."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
            self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write the counts since the last flush and the gauges, then reset the counts."""
        with self._lock:
            counts, self._counts = self._counts, _Counts()
        try:
            gauges = dict(self.gauges())
        except Exception:
            # A gauge that fails must not lose the counts.
            logger.exception("gateway gauges not read")
            gauges = {}
        lines = [self._totals(counts, gauges)]
        lines.extend(
            self._failures(status, count) for status, count in sorted(counts.failures.items())
        )
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
        stream.flush()

    def _totals(self, counts: _Counts, gauges: Mapping[str, int]) -> Mapping[str, object]:
        metrics = self._new_metric_set(self.dimensions)
        metrics.add_metric("AssociationsAccepted", MetricUnit.Count, counts.accepted)
        metrics.add_metric("AssociationsRejected", MetricUnit.Count, counts.rejected)
        metrics.add_metric("AssociationsAborted", MetricUnit.Count, counts.aborted)
        metrics.add_metric("InstancesStored", MetricUnit.Count, counts.stored)
        metrics.add_metric("StoredBytes", MetricUnit.Bytes, counts.stored_bytes)
        for name, value in gauges.items():
            unit = MetricUnit.Bytes if name.endswith("Bytes") else MetricUnit.Count
            metrics.add_metric(name, unit, value)
        return metrics.serialize_metric_set()

    def _failures(self, status: int, count: int) -> Mapping[str, object]:
        metrics = self._new_metric_set({**self.dimensions, "Status": f"0x{status:04X}"})
        metrics.add_metric("StoreFailures", MetricUnit.Count, count)
        return metrics.serialize_metric_set()

    def _new_metric_set(self, dimensions: Mapping[str, str]) -> EphemeralMetrics:
        metrics = EphemeralMetrics(namespace=self.namespace, service=SERVICE)
        for name, value in dimensions.items():
            metrics.add_dimension(name, value)
        return metrics

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                self.flush()
            except Exception:
                logger.exception("gateway metrics not flushed")

    def _on_accepted(self, event: Event) -> None:
        with self._lock:
            self._counts.accepted += 1
            self._accepted.add(event.assoc)

    def _on_rejected(self, event: Event) -> None:
        with self._lock:
            self._counts.rejected += 1

    def _on_aborted(self, event: Event) -> None:
        # pynetdicom also reports the end of a rejected association as aborted.
        with self._lock:
            if event.assoc in self._accepted:
                self._accepted.discard(event.assoc)
                self._counts.aborted += 1

    def _on_dimse_sent(self, event: Event) -> None:
        message = event.message
        if not isinstance(message, C_STORE_RSP):
            return
        status = int(message.command_set.Status)
        with self._lock:
            if status in _STORED_STATUSES:
                self._counts.stored += 1
            else:
                self._counts.failures[status] += 1


def metrics_of(assoc: Association) -> GatewayMetrics | None:
    """Return the metrics of the gateway that serves ``assoc``, if it keeps any."""
    metrics = getattr(assoc.ae, "metrics", None)
    return metrics if isinstance(metrics, GatewayMetrics) else None
