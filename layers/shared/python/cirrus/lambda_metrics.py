"""Metrics of the ingest and DICOMweb Lambda functions, as CloudWatch EMF lines on stdout.

They follow the gateway's scheme (``cirrus.gateway.metrics``): namespace ``Cirrus`` (or
``POWERTOOLS_METRICS_NAMESPACE``), a ``Deployment`` dimension, Powertools' ``service``
dimension, and metric names in PascalCase with the unit in the name where it is not a count.
Lambda sends standard output to CloudWatch Logs, which extracts the metrics from these lines.

Ingest (service ``cirrus-ingest``), one line per site of the batch, with a ``Site`` dimension.
Sites are the site names of object keys, which only the write path creates from the
configured sites, so their number stays small:

- ``InstancesIndexed`` and ``IndexedBytes``: the objects of the messages that succeeded,
  redeliveries of an object indexed already included;
- ``IngestLatencyMilliseconds``: from the S3 event time (the object's creation) to the end
  of the batch, one value per object;
- ``IngestFailures``: objects of the messages that failed and will be delivered again.

DICOMweb (service ``cirrus-dicomweb``), one line per request, with an ``Operation``
dimension (``OPERATIONS``) instead of a site, because the site in a request path is client
input and would give every typo its own metric:

- ``Requests``, ``ClientErrors`` (4xx) and ``ServerErrors`` (5xx, and exceptions);
- ``RequestLatencyMilliseconds``: the handler's time, without API Gateway's.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from cirrus.storage.keys import InstanceKey

logger = logging.getLogger(__name__)

# The same default as the gateway's CIRRUS_METRICS_NAMESPACE (cirrus.gateway.metrics).
DEFAULT_NAMESPACE: Final = "Cirrus"
INGEST_SERVICE: Final = "cirrus-ingest"
DICOMWEB_SERVICE: Final = "cirrus-dicomweb"
INGEST_METRICS: Final = (
    "InstancesIndexed",
    "IndexedBytes",
    "IngestLatencyMilliseconds",
    "IngestFailures",
)
DICOMWEB_METRICS: Final = ("Requests", "ClientErrors", "ServerErrors", "RequestLatencyMilliseconds")
OPERATIONS: Final = ("search", "retrieve", "metadata", "rendered", "store", "delete", "other")
# "false" in the pixel function's environment: a request that it serves was forwarded by the
# DICOMweb function, which counts it already, with the pixel function's time included.
REQUEST_METRICS_VARIABLE: Final = "CIRRUS_REQUEST_METRICS"
# The Site value of failed messages whose object key names no valid site.
UNKNOWN_SITE: Final = "unknown"
# EMF takes at most 100 values of one metric in one line.
_MAX_VALUES: Final = 100


def namespace() -> str:
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "").strip() or DEFAULT_NAMESPACE


class _SiteCounts:
    def __init__(self) -> None:
        self.indexed = 0
        self.bytes = 0
        self.failures = 0
        self.latencies: list[float] = []


def ingest_metric_lines(
    event: Mapping[str, Any], response: Mapping[str, Any], deployment: str, now: datetime
) -> list[dict[str, Any]]:
    """Return the EMF lines of one ingest batch and its partial batch response."""
    failed = {item.get("itemIdentifier") for item in response.get("batchItemFailures", ())}
    sites: dict[str, _SiteCounts] = defaultdict(_SiteCounts)
    for record in event.get("Records", ()):
        success = record.get("messageId") not in failed
        for site, size, created in _objects_of(record.get("body", "")):
            counts = sites[site]
            if not success:
                counts.failures += 1
                continue
            counts.indexed += 1
            counts.bytes += size
            if created is not None:
                counts.latencies.append(max((now - created).total_seconds() * 1000, 0.0))
    return [_ingest_line(site, counts, deployment) for site, counts in sorted(sites.items())]


def _ingest_line(site: str, counts: _SiteCounts, deployment: str) -> dict[str, Any]:
    metrics = _metric_set(INGEST_SERVICE, {"Deployment": deployment, "Site": site})
    metrics.add_metric("InstancesIndexed", MetricUnit.Count, counts.indexed)
    metrics.add_metric("IndexedBytes", MetricUnit.Bytes, counts.bytes)
    metrics.add_metric("IngestFailures", MetricUnit.Count, counts.failures)
    for latency in counts.latencies[:_MAX_VALUES]:
        metrics.add_metric("IngestLatencyMilliseconds", MetricUnit.Milliseconds, latency)
    return dict(metrics.serialize_metric_set())


def _objects_of(body: str) -> Iterable[tuple[str, int, datetime | None]]:
    """Yield the site, size and creation time of each object of an S3 notification body.

    A body that is no S3 notification (a bundle refresh request, a test event) yields nothing.
    """
    try:
        records = json.loads(body).get("Records") or []
    except (ValueError, AttributeError):
        return
    for record in records:
        try:
            s3_object = record["s3"]["object"]
            key = unquote_plus(str(s3_object["key"]))
            size = int(s3_object.get("size") or 0)
        except (KeyError, TypeError, ValueError):
            continue
        try:
            site = InstanceKey.parse(key).site
        except ValueError:
            site = UNKNOWN_SITE
        yield site, size, _event_time(record.get("eventTime"))


def _event_time(value: object) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def record_ingest(event: Mapping[str, Any], response: Mapping[str, Any], deployment: str) -> None:
    """Write the EMF lines of one ingest batch to standard output."""
    try:
        _write(ingest_metric_lines(event, response, deployment, datetime.now(UTC)))
    except Exception:
        # Metrics must not fail a batch whose objects are indexed already.
        logger.exception("ingest metrics not written")


def request_operation(method: str, path: str) -> str:
    """Return the operation of a DICOMweb request, one of ``OPERATIONS``."""
    method = method.upper()
    if method == "POST":
        return "store"
    if method == "DELETE":
        return "delete"
    if method not in ("GET", "HEAD"):
        return "other"
    segments = [segment for segment in path.split("/") if segment]
    if "studies" not in segments:
        return "other"
    last = segments[-1]
    if last in ("studies", "series", "instances"):
        return "search"
    if last == "metadata":
        return "metadata"
    if last in ("rendered", "thumbnail"):
        return "rendered"
    return "retrieve"


def request_metrics_enabled() -> bool:
    return os.environ.get(REQUEST_METRICS_VARIABLE, "true").strip().lower() != "false"


def dicomweb_metric_line(
    method: str, path: str, status: int, elapsed_ms: float, deployment: str
) -> dict[str, Any]:
    """Return the EMF line of one DICOMweb request."""
    operation = request_operation(method, path)
    metrics = _metric_set(DICOMWEB_SERVICE, {"Deployment": deployment, "Operation": operation})
    metrics.add_metric("Requests", MetricUnit.Count, 1)
    metrics.add_metric("ClientErrors", MetricUnit.Count, int(400 <= status < 500))
    metrics.add_metric("ServerErrors", MetricUnit.Count, int(status >= 500))
    metrics.add_metric("RequestLatencyMilliseconds", MetricUnit.Milliseconds, elapsed_ms)
    return dict(metrics.serialize_metric_set())


def measured_request(
    event: Mapping[str, Any], deployment: str, resolve: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``resolve`` for one API Gateway event, write its EMF line and return its result.

    An exception counts as a server error and is raised again. Without request metrics
    (``REQUEST_METRICS_VARIABLE``) it only runs ``resolve``.
    """
    if not request_metrics_enabled():
        return resolve()
    started = time.monotonic()
    status = 500
    try:
        result = resolve()
        status = int(result.get("statusCode", 500))
        return result
    finally:
        elapsed_ms = (time.monotonic() - started) * 1000
        method, path = str(event.get("httpMethod", "")), str(event.get("path", ""))
        try:
            _write([dicomweb_metric_line(method, path, status, elapsed_ms, deployment)])
        except Exception:
            logger.exception("request metrics not written")


def _metric_set(service: str, dimensions: Mapping[str, str]) -> EphemeralMetrics:
    metrics = EphemeralMetrics(namespace=namespace(), service=service)
    for name, value in dimensions.items():
        metrics.add_dimension(name, value)
    return metrics


def _write(lines: list[dict[str, Any]]) -> None:
    if not lines:
        return
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    sys.stdout.write(text)
    sys.stdout.flush()
