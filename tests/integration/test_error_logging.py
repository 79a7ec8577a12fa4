"""Error responses over HTTP keep request values out of every log record.

The client gets its own values back in the error message. The log gets the status, the error
class, and the name and kind of error of an invalid parameter, never a value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import requests

from cirrus.config import Settings
from tests.integration.dicomweb_stack import Stack, running_stack

# Queries with patient-identifying values, each invalid in one way, with the attribute that
# fails, the logged kind of error and a part of the message that the client gets back.
INVALID_QUERIES = [
    (
        {"PatientBirthDate": "19710123-19700101"},
        "PatientBirthDate",
        "DA range ends before it starts",
        "range '19710123-19700101' ends before it starts",
    ),
    (
        {"PatientBirthDate": "19710230"},
        "PatientBirthDate",
        "invalid DA value or range",
        "value '19710230' is not a valid DA value",
    ),
    (
        {"PatientName": "Quartermaine^Eudora", "StudyDate": "20230231"},
        "StudyDate",
        "invalid DA value or range",
        "value '20230231' is not a valid DA value",
    ),
    (
        {"PatientName": ["Quartermaine^Eudora", "Zamboni^Ottoline"]},
        "PatientName",
        "repeated",
        "PatientName is given 2 times",
    ),
    (
        {"PatientID": ["MRN-5523190", "MRN-5523191"]},
        "PatientID",
        "repeated",
        "PatientID is given 2 times",
    ),
    (
        {"AccessionNumber": ["ACC-77412093", "ACC-77412094"], "PatientID": "MRN-5523190"},
        "AccessionNumber",
        "repeated",
        "AccessionNumber is given 2 times",
    ),
    (
        {"StudyDate": "20240101-20231231", "PatientBirthDate": "19650704"},
        "StudyDate",
        "DA range ends before it starts",
        "range '20240101-20231231' ends before it starts",
    ),
]


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def query_values(params: dict[str, str | list[str]]) -> list[str]:
    """Return every value of ``params`` and each date of a range, the strings to look for."""
    values: list[str] = []
    for value in params.values():
        for item in [value] if isinstance(value, str) else value:
            values.append(item)
            if item.replace("-", "").isdigit():
                values.extend(side for side in item.split("-") if side)
    return values


def server_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Return the records of the server; urllib3 logs the URL that the test client sends."""
    return [record for record in caplog.records if not record.name.startswith("urllib3")]


def record_texts(record: logging.LogRecord) -> list[str]:
    """Return the message and every field of ``record`` as text, its traceback included."""
    texts = [record.getMessage()]
    texts.extend(str(value) for value in vars(record).values())
    if record.exc_info:
        texts.append(logging.Formatter().formatException(record.exc_info))
    return texts


@pytest.mark.parametrize(("params", "attribute", "kind", "message"), INVALID_QUERIES)
def test_invalid_query_values_not_logged(
    stack: Stack,
    caplog: pytest.LogCaptureFixture,
    params: dict[str, str | list[str]],
    attribute: str,
    kind: str,
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG)

    response = requests.get(f"{stack.url}/studies", params=params, timeout=30)

    assert response.status_code == 400
    assert message in response.json()["error"]
    records = server_records(caplog)
    failures = [record for record in records if record.getMessage() == "request failed"]
    assert len(failures) == 1
    assert getattr(failures[0], "status", None) == 400
    assert getattr(failures[0], "parameter", None) == attribute
    assert getattr(failures[0], "kind", None) == kind
    for value in query_values(params):
        for record in records:
            for text in record_texts(record):
                assert value not in text, (value, record.name, record.getMessage())


def test_invalid_series_query_values_not_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    response = requests.get(
        f"{stack.url}/studies/1.2.3/series",
        params={"PatientName": "Quartermaine^Eudora", "SeriesDate": "19710230"},
        timeout=30,
    )

    assert response.status_code == 400
    assert "'19710230'" in response.json()["error"]
    logged = " ".join(text for record in server_records(caplog) for text in record_texts(record))
    assert "SeriesDate" in logged
    assert "19710230" not in logged
    assert "Quartermaine" not in logged
