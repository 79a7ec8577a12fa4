"""EMF metrics that the ingest and DICOMweb Lambda handlers write, from real invocations."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import Settings
from cirrus.lambda_metrics import (
    DICOMWEB_METRICS,
    INGEST_METRICS,
    REQUEST_METRICS_VARIABLE,
    request_operation,
)
from cirrus.local.http import LocalContext
from cirrus.services import Services
from functions.dicomweb import handler as dicomweb_handler
from functions.ingest import handler as ingest_handler
from tests.integration.test_dicomweb_adapter import proxy_event
from tests.integration.test_ingest import _instance, _queued_bodies

NAMESPACE = "CirrusTest"  # POWERTOOLS_METRICS_NAMESPACE of tests/conftest.py


@pytest.fixture
def lambda_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    cirrus_logger = logging.getLogger("cirrus")
    handlers = cirrus_logger.handlers[:]
    propagate, level = cirrus_logger.propagate, cirrus_logger.level
    ingest_handler._lambda_services.cache_clear()
    dicomweb_handler._lambda_services.cache_clear()
    yield
    ingest_handler._lambda_services.cache_clear()
    dicomweb_handler._lambda_services.cache_clear()
    cirrus_logger.handlers[:] = handlers
    cirrus_logger.propagate = propagate
    cirrus_logger.setLevel(level)


def emf_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "_aws" in document:
            lines.append(document)
    return lines


def metric_names(line: dict[str, Any]) -> list[str]:
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    return [metric["Name"] for metric in directive["Metrics"]]


def dimensions(line: dict[str, Any]) -> list[str]:
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    (names,) = directive["Dimensions"]
    return sorted(names)


def test_ingest_emits_per_site_metrics(
    settings: Settings, lambda_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    services = Services(settings)
    sizes: dict[str, int] = {"default": 0, "north": 0}
    for site, count in (("default", 2), ("north", 1)):
        for _ in range(count):
            archived = archive_instance(services.store, site, _instance(generate_uid(), "1.2.3"))
            sizes[site] += archived.stored.size
    records = _queued_bodies(services)
    assert len(records) == 3
    bad_key = f"sites/north/studies/{generate_uid()}/series/1.2/instances/1.3.dcm"
    services.store.put(bad_key, b"not dicom")
    body = json.loads(records[0]["body"])
    body["Records"][0]["s3"]["object"]["key"] = bad_key
    bad = {"messageId": "bad", "receiptHandle": "bad", "body": json.dumps(body)}
    capsys.readouterr()

    response = ingest_handler.lambda_handler(
        {"Records": [*records, bad]}, LocalContext(aws_request_id="i-1")
    )

    assert len(response["batchItemFailures"]) == 1
    lines = {line["Site"]: line for line in emf_lines(capsys.readouterr().out)}
    assert set(lines) == {"default", "north"}
    for site, line in lines.items():
        assert sorted(metric_names(line)) == sorted(INGEST_METRICS)
        assert dimensions(line) == ["Deployment", "Site", "service"]
        assert line["Deployment"] == settings.deployment
        assert line["service"] == "cirrus-ingest"
        assert line["IndexedBytes"] == [sizes[site]]
    assert lines["default"]["InstancesIndexed"] == [2]
    assert lines["default"]["IngestFailures"] == [0]
    assert lines["north"]["InstancesIndexed"] == [1]
    assert lines["north"]["IngestFailures"] == [1]
    latencies = lines["default"]["IngestLatencyMilliseconds"]
    assert len(latencies) == 2
    assert all(latency >= 0 for latency in latencies)


def test_ingest_skips_messages_without_objects(
    lambda_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    test_event = {"Records": [{"messageId": "m-1", "body": '{"Event": "s3:TestEvent"}'}]}
    response = ingest_handler.lambda_handler(test_event, LocalContext(aws_request_id="i-2"))
    assert response == {"batchItemFailures": []}
    assert emf_lines(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("method", "path", "status", "operation"),
    [
        ("GET", "/studies", 204, "search"),
        ("GET", "/studies/1.2.3/metadata", 404, "metadata"),
        ("GET", "/studies/1.2.3", 404, "retrieve"),
        ("DELETE", "/studies/1.2.3", 404, "delete"),
        ("GET", "/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered", 404, "rendered"),
        ("GET", "/nothing-here", 404, "other"),
    ],
)
def test_dicomweb_emits_request_metrics(
    settings: Settings,
    lambda_environment: None,
    capsys: pytest.CaptureFixture[str],
    method: str,
    path: str,
    status: int,
    operation: str,
) -> None:
    result = dicomweb_handler.lambda_handler(
        proxy_event(method, path), LocalContext(aws_request_id="r-1")
    )
    assert result["statusCode"] == status
    (line,) = emf_lines(capsys.readouterr().out)
    assert sorted(metric_names(line)) == sorted(DICOMWEB_METRICS)
    assert dimensions(line) == ["Deployment", "Operation", "service"]
    assert line["Operation"] == operation
    assert line["Deployment"] == settings.deployment
    assert line["service"] == "cirrus-dicomweb"
    assert line["Requests"] == [1]
    assert line["ClientErrors"] == [1 if 400 <= status < 500 else 0]
    assert line["ServerErrors"] == [0]
    (latency,) = line["RequestLatencyMilliseconds"]
    assert latency >= 0


def test_dicomweb_exception_counts_server_error(
    lambda_environment: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> dict[str, Any]:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(dicomweb_handler, "handle", broken)
    with pytest.raises(RuntimeError):
        dicomweb_handler.lambda_handler(proxy_event("GET", "/studies"), LocalContext("r-2"))
    (line,) = emf_lines(capsys.readouterr().out)
    assert line["ServerErrors"] == [1]
    assert line["Operation"] == "search"


def test_site_path_operation_bounded() -> None:
    assert request_operation("GET", "/sites/anything-at-all/studies") == "search"
    assert request_operation("PATCH", "/studies") == "other"
    assert request_operation("GET", "/../../etc/passwd") == "other"


def test_pixel_function_counts_nothing(
    lambda_environment: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pixel function serves forwarded requests, which the DICOMweb function counts.
    monkeypatch.setenv(REQUEST_METRICS_VARIABLE, "false")
    result = dicomweb_handler.lambda_handler(proxy_event("GET", "/studies"), LocalContext("r-3"))
    assert result["statusCode"] == 204
    assert emf_lines(capsys.readouterr().out) == []
