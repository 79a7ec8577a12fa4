"""Gateway metrics as CloudWatch embedded metric format (EMF) lines on standard output.

The gateway is a long-running container, not a Lambda function, so nothing flushes metrics at
the end of an invocation. ``GatewayMetrics`` counts in memory instead and writes what it
counted every ``interval_seconds`` and once more at stop. Each flush writes one JSON line per
dimension set, built by Powertools' ``EphemeralMetrics`` (which keeps no state shared between
instances, unlike ``Metrics``):

- with the gateway's dimensions: ``AssociationsAccepted``, ``AssociationsRejected``,
  ``AssociationsAborted``, ``InstancesStored``, ``StoredBytes``, ``AuditFailures`` (audit
  records that could not be written; counts since the last flush), ``ActiveAssociations`` and
  ``SpoolBytes`` (values at the flush);
- with ``Status`` added, one line per failure status sent since the last flush:
  ``StoreFailures``, ``FindFailures``, ``MoveFailures``, ``GetFailures`` and
  ``CommitmentFailures``, the C-STORE, C-FIND, C-MOVE, C-GET and N-ACTION (Storage
  Commitment) responses with that status. A C-STORE fails with every status other than
  Success and the Warning statuses that store the instance. The other services fail with the
  statuses that pynetdicom's ``code_to_category`` does not place in Success, Pending, Cancel
  or Warning.

On ECS the awslogs driver sends standard output to CloudWatch Logs, which extracts the
metrics from these lines. The counts come from pynetdicom's events, so every response is
counted, including those that pynetdicom itself sends when a handler fails.
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
from pynetdicom.dimse_messages import (
    C_FIND_RSP,
    C_GET_RSP,
    C_MOVE_RSP,
    C_STORE_RSP,
    N_ACTION_RSP,
    DIMSEMessage,
)
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.status import (
    STATUS_CANCEL,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_WARNING,
    code_to_category,
)

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE: Final = "Cirrus"
SERVICE: Final = "cirrus-gateway"
DEFAULT_INTERVAL_SECONDS: Final = 60.0
# Warning statuses of the Storage Service Class (PS3.4 B.2.3) store the instance too.
_STORED_STATUSES: Final = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
_NOT_FAILED_CATEGORIES: Final = frozenset(
    {STATUS_SUCCESS, STATUS_PENDING, STATUS_CANCEL, STATUS_WARNING}
)
# The metric that counts the failure responses of each kind of response message.
_FAILURE_METRICS: Final[Mapping[type[DIMSEMessage], str]] = {
    C_STORE_RSP: "StoreFailures",
    C_FIND_RSP: "FindFailures",
    C_MOVE_RSP: "MoveFailures",
    C_GET_RSP: "GetFailures",
    N_ACTION_RSP: "CommitmentFailures",
}


@dataclass
class _Counts:
    accepted: int = 0
    rejected: int = 0
    aborted: int = 0
    stored: int = 0
    stored_bytes: int = 0
    audit_failures: int = 0
    # Failure responses by metric name and status.
    failures: Counter[tuple[str, int]] = field(default_factory=Counter)


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

    def add_audit_failure(self) -> None:
        with self._lock:
            self._counts.audit_failures += 1

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
        by_status: dict[int, dict[str, int]] = {}
        for (metric, status), count in counts.failures.items():
            by_status.setdefault(status, {})[metric] = count
        lines.extend(self._failures(status, by_status[status]) for status in sorted(by_status))
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
        metrics.add_metric("AuditFailures", MetricUnit.Count, counts.audit_failures)
        for name, value in gauges.items():
            unit = MetricUnit.Bytes if name.endswith("Bytes") else MetricUnit.Count
            metrics.add_metric(name, unit, value)
        return metrics.serialize_metric_set()

    def _failures(self, status: int, counts: Mapping[str, int]) -> Mapping[str, object]:
        metrics = self._new_metric_set({**self.dimensions, "Status": f"0x{status:04X}"})
        for name, count in sorted(counts.items()):
            metrics.add_metric(name, MetricUnit.Count, count)
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
        metric = _FAILURE_METRICS.get(type(message))
        if metric is None:
            return
        status = int(message.command_set.Status)
        if isinstance(message, C_STORE_RSP):
            stored = status in _STORED_STATUSES
            failed = not stored
        else:
            stored = False
            failed = code_to_category(status) not in _NOT_FAILED_CATEGORIES
        with self._lock:
            if stored:
                self._counts.stored += 1
            if failed:
                self._counts.failures[metric, status] += 1


def metrics_of(assoc: Association) -> GatewayMetrics | None:
    """Return the metrics of the gateway that serves ``assoc``, if it keeps any."""
    metrics = getattr(assoc.ae, "metrics", None)
    return metrics if isinstance(metrics, GatewayMetrics) else None
