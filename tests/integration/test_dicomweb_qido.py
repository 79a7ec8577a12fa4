"""QIDO-RS routes over HTTP with a recording fake of the QIDO service.

The requests are sent with http.client so that each query string reaches the server exactly
as written here, percent-encoding included.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from cirrus.dicomweb.app import DicomwebServices
from cirrus.errors import InvalidRequestError
from cirrus.local.http import HttpServer, serve_http
from functions.dicomweb.handler import handle

SITE = "default"
STUDY_MATCH = {
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
}


@dataclass
class SearchResult:
    matches: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


@dataclass
class RecordingQido:
    """Records each search call and returns the configured result."""

    result: SearchResult = field(default_factory=lambda: SearchResult([STUDY_MATCH]))
    error: Exception | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    echo_study: bool = False

    def search(self, **kwargs: Any) -> SearchResult:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        if self.echo_study:
            time.sleep(0.001)  # widen the window in which concurrent requests overlap
            return SearchResult([{"0020000D": {"vr": "UI", "Value": [kwargs["study"]]}}])
        return self.result


@dataclass
class QidoServer:
    server: HttpServer
    qido: RecordingQido

    def get(
        self, target: str, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            connection.request("GET", f"/dicomweb{target}", headers=headers or {})
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()

    def params(self, query: str) -> dict[str, list[str]]:
        """Search /studies with ``query`` and return the parameters the service received."""
        response, _ = self.get(f"/studies?{query}")
        assert response.status == 200
        params: dict[str, list[str]] = self.qido.calls[-1]["params"]
        return params


@pytest.fixture
def qido_server() -> Iterator[QidoServer]:
    qido = RecordingQido()
    services = DicomwebServices(store=None, reader=None, qido=qido, site=SITE)  # type: ignore[arg-type]
    server = serve_http(functools.partial(handle, services=services), "127.0.0.1", 0)
    yield QidoServer(server, qido)
    server.shutdown()


# Routes and arguments


@pytest.mark.parametrize(
    ("target", "level", "study", "series"),
    [
        ("/studies", "STUDY", None, None),
        ("/series", "SERIES", None, None),
        ("/instances", "INSTANCE", None, None),
        ("/studies/1.2.3/series", "SERIES", "1.2.3", None),
        ("/studies/1.2.3/instances", "INSTANCE", "1.2.3", None),
        ("/studies/1.2.3/series/4.5.6/instances", "INSTANCE", "1.2.3", "4.5.6"),
    ],
)
def test_qido_routes(
    qido_server: QidoServer, target: str, level: str, study: str | None, series: str | None
) -> None:
    response, body = qido_server.get(target)

    assert response.status == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    assert json.loads(body) == [STUDY_MATCH]
    (call,) = qido_server.qido.calls
    assert call == {
        "site": SITE,
        "level": level,
        "params": {},
        "study": study,
        "series": series,
        "base_url": f"http://127.0.0.1:{qido_server.server.port}/dicomweb",
    }


# Query parameter decoding: once, as API Gateway REST does


def test_qido_repeated_keys_keep_order(qido_server: QidoServer) -> None:
    params = qido_server.params("includefield=00100010&PatientID=1&includefield=00100020")
    assert params == {"includefield": ["00100010", "00100020"], "PatientID": ["1"]}


def test_qido_comma_list_kept(qido_server: QidoServer) -> None:
    assert qido_server.params("ModalitiesInStudy=CT,MR") == {"ModalitiesInStudy": ["CT,MR"]}
    assert qido_server.params("ModalitiesInStudy=CT%2CMR") == {"ModalitiesInStudy": ["CT,MR"]}


def test_qido_wildcards(qido_server: QidoServer) -> None:
    assert qido_server.params("PatientName=%2A") == {"PatientName": ["*"]}
    assert qido_server.params("PatientName=Do*") == {"PatientName": ["Do*"]}
    assert qido_server.params("PatientName=D%3Fe") == {"PatientName": ["D?e"]}


def test_qido_plus_and_space(qido_server: QidoServer) -> None:
    assert qido_server.params("PatientName=Doe+John") == {"PatientName": ["Doe John"]}
    assert qido_server.params("PatientName=Doe%20John") == {"PatientName": ["Doe John"]}
    assert qido_server.params("PatientName=Doe%2BJohn") == {"PatientName": ["Doe+John"]}


def test_qido_decoded_exactly_once(qido_server: QidoServer) -> None:
    assert qido_server.params("PatientName=%252A") == {"PatientName": ["%2A"]}
    assert qido_server.params("PatientName=Doe%5EJohn") == {"PatientName": ["Doe^John"]}
    assert qido_server.params("PatientName=M%C3%BCller") == {"PatientName": ["Müller"]}
    assert qido_server.params("00100010=a%26b%3Dc") == {"00100010": ["a&b=c"]}


def test_qido_blank_values(qido_server: QidoServer) -> None:
    assert qido_server.params("fuzzymatching=&PatientID") == {
        "fuzzymatching": [""],
        "PatientID": [""],
    }


# Responses


def test_qido_no_matches(qido_server: QidoServer) -> None:
    qido_server.qido.result = SearchResult([])

    response, body = qido_server.get("/studies?PatientID=none")

    assert response.status == 204
    assert body == b""


def test_qido_warning_headers(qido_server: QidoServer) -> None:
    qido_server.qido.result = SearchResult(
        [STUDY_MATCH],
        ["fuzzymatching is not supported", 'the attribute "X" is unknown and was ignored'],
    )

    response, _ = qido_server.get("/studies")

    host = f"127.0.0.1:{qido_server.server.port}"
    assert response.status == 200
    assert response.headers.get_all("Warning") == [
        f'299 {host}: "fuzzymatching is not supported"',
        f'299 {host}: "the attribute \\"X\\" is unknown and was ignored"',
    ]


def test_qido_warning_without_matches(qido_server: QidoServer) -> None:
    qido_server.qido.result = SearchResult([], ["limit is capped at 1000"])

    response, _ = qido_server.get("/studies?limit=5000")

    assert response.status == 204
    assert response.headers.get_all("Warning") == [
        f'299 127.0.0.1:{qido_server.server.port}: "limit is capped at 1000"'
    ]


def test_qido_not_acceptable(qido_server: QidoServer) -> None:
    response, body = qido_server.get("/studies", {"Accept": "application/dicom+xml"})

    assert response.status == 406
    assert json.loads(body) == {
        "error": "this resource is available only as application/dicom+json"
    }
    assert qido_server.qido.calls == []


def test_qido_accept_json(qido_server: QidoServer) -> None:
    for accept in ("application/dicom+json", "application/json", "application/*", "*/*"):
        response, _ = qido_server.get("/studies", {"Accept": accept})
        assert response.status == 200, accept


def test_qido_invalid_request(qido_server: QidoServer) -> None:
    qido_server.qido.error = InvalidRequestError("limit 'x' is not a number; use 1 to 1000")

    response, body = qido_server.get("/studies?limit=x")

    assert response.status == 400
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "limit 'x' is not a number; use 1 to 1000"}


def test_qido_unexpected_error(qido_server: QidoServer, caplog: pytest.LogCaptureFixture) -> None:
    qido_server.qido.error = RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="cirrus.dicomweb.errors"):
        response, body = qido_server.get("/studies")

    assert response.status == 500
    message = json.loads(body)["error"]
    assert message.startswith("internal error; the request was not completed (request id ")
    assert "secret" not in message
    (record,) = [r for r in caplog.records if r.name == "cirrus.dicomweb.errors"]
    assert record.getMessage() == "unexpected error"
    assert getattr(record, "error", None) == "RuntimeError"
    assert "in search" in getattr(record, "traceback", "")
    # The text of an unexpected exception can quote request values, so it is not logged.
    assert record.exc_info is None
    assert all("secret" not in str(value) for value in vars(record).values())


def test_qido_concurrent_requests(qido_server: QidoServer) -> None:
    """Requests served by parallel threads each get the response for their own path."""
    qido_server.qido.echo_study = True

    def study_of_response(study: str) -> str:
        response, body = qido_server.get(f"/studies/{study}/series")
        assert response.status == 200
        return str(json.loads(body)[0]["0020000D"]["Value"][0])

    studies = [f"1.2.{number}" for number in range(200)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answered = list(pool.map(study_of_response, studies))

    assert answered == studies
