"""SigV4 verification of the local stack: requests signed by botocore, checked field by field."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cirrus.local.sigv4 import (
    SIGNATURE_REJECTED,
    CredentialsConfigError,
    SignatureError,
    SignedRequest,
    SigV4Verifier,
    closed_credentials,
    identity_of,
    load_credentials,
    parse_credentials,
)

KEY = "AKIALOCALTEST0000001"
SECRET = "local-test-secret-0123456789"
PRINCIPAL = "arn:aws:iam::111122223333:role/north-reader"
REGION = "eu-west-1"
SIGNED_AT = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
URL = "http://127.0.0.1:8080/dicomweb"
CREDENTIALS = parse_credentials({"credentials": {KEY: {"secret": SECRET, "principal": PRINCIPAL}}})


def sign(
    method: str = "GET",
    path: str = "/studies",
    params: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    secret: str = SECRET,
    key: str = KEY,
    region: str = REGION,
    service: str = "execute-api",
    signed_at: datetime = SIGNED_AT,
) -> SignedRequest:
    """Sign a request with botocore and return it as the server receives it."""
    aws = AWSRequest(
        method=method, url=f"{URL}{path}", params=params or {}, data=body, headers=headers or {}
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
        SigV4Auth(Credentials(key, secret), service, region).add_auth(aws)
    prepared = aws.prepare()
    url = urlsplit(prepared.url)
    received: dict[str, list[str]] = {"host": [url.netloc]}
    for name, value in prepared.headers.items():
        received.setdefault(name.lower(), []).append(value)
    return SignedRequest(method, url.scheme, url.path, url.query, received, body)


def verifier(now: datetime = SIGNED_AT) -> SigV4Verifier:
    return SigV4Verifier(CREDENTIALS, REGION, clock=now.timestamp)


def replace_header(request: SignedRequest, name: str, value: str | None) -> SignedRequest:
    headers = dict(request.headers)
    if value is None:
        headers.pop(name, None)
    else:
        headers[name] = [value]
    return SignedRequest(
        request.method, request.scheme, request.path, request.query, headers, request.body
    )


def test_signed_request_verified() -> None:
    caller = verifier().verify(sign())

    assert caller.access_key == KEY
    assert caller.principal == PRINCIPAL


@pytest.mark.parametrize(
    "params",
    [
        {"PatientName": "Doe*", "limit": "10"},
        {"PatientName": "Doe John", "StudyDate": "20240101-20241231"},
        [("includefield", "00100010"), ("includefield", "00100020")],
        {"AccessionNumber": "A/1+2&3=4"},
        {"PatientName": "Müller^Jürgen"},
        {"empty": ""},
    ],
)
def test_query_values_verified(params: dict[str, str] | list[tuple[str, str]]) -> None:
    assert verifier().verify(sign(params=params)).principal == PRINCIPAL


def test_query_reordered_verified() -> None:
    request = sign(params=[("a", "1"), ("b", "2")])
    reordered = SignedRequest(
        request.method, request.scheme, request.path, "b=2&a=1", request.headers, request.body
    )

    assert verifier().verify(reordered).principal == PRINCIPAL


def test_percent_encoded_path_verified() -> None:
    request = sign(path="/sites/north/studies/1.2.3/series/4.5%2F6")

    assert verifier().verify(request).principal == PRINCIPAL


def test_body_verified() -> None:
    request = sign("POST", body=b"--boundary\r\nbody", headers={"Content-Type": "text/plain"})

    assert verifier().verify(request).principal == PRINCIPAL


def test_declared_payload_hash_verified() -> None:
    body = b"some body"
    request = sign(
        "POST", body=body, headers={"X-Amz-Content-Sha256": hashlib.sha256(body).hexdigest()}
    )

    assert verifier().verify(request).principal == PRINCIPAL


def failure(request: SignedRequest, checker: SigV4Verifier | None = None) -> SignatureError:
    with pytest.raises(SignatureError) as raised:
        (checker or verifier()).verify(request)
    return raised.value


def test_wrong_secret_rejected() -> None:
    error = failure(sign(secret="another-secret-0123456789"))

    assert error.reason == "signature mismatch"
    assert str(error) == SIGNATURE_REJECTED


def test_unknown_key_rejected() -> None:
    error = failure(sign(key="AKIAUNKNOWN000000001"))

    assert error.reason == "unknown access key"
    assert str(error) == SIGNATURE_REJECTED
    assert "AKIAUNKNOWN000000001" not in str(error)


@pytest.mark.parametrize("offset", [timedelta(minutes=-10), timedelta(0)])
def test_unknown_key_same_message(offset: timedelta) -> None:
    signed_at = SIGNED_AT + offset
    known = failure(sign(secret="another-secret-0123456789", signed_at=signed_at))
    unknown = failure(sign(key="AKIAUNKNOWN000000001", signed_at=signed_at))

    assert str(unknown) == str(known)


def test_unsigned_rejected() -> None:
    error = failure(replace_header(sign(), "authorization", None))

    assert error.reason == "unsigned"


@pytest.mark.parametrize(
    "value",
    ["Bearer token", "AWS4-HMAC-SHA256 Credential=x", "AWS4-HMAC-SHA1 Credential=a, b, c"],
)
def test_malformed_authorization_rejected(value: str) -> None:
    assert failure(replace_header(sign(), "authorization", value)).reason == (
        "malformed Authorization header"
    )


@pytest.mark.parametrize("offset", [timedelta(minutes=-10), timedelta(minutes=5, seconds=1)])
def test_date_out_of_range_rejected(offset: timedelta) -> None:
    error = failure(sign(signed_at=SIGNED_AT + offset))

    assert error.reason == "request date out of range"


@pytest.mark.parametrize("offset", [timedelta(minutes=-5), timedelta(minutes=4, seconds=59)])
def test_date_within_five_minutes_verified(offset: timedelta) -> None:
    assert verifier().verify(sign(signed_at=SIGNED_AT + offset)).access_key == KEY


def test_date_not_matching_scope_rejected() -> None:
    request = sign()
    next_day = replace_header(request, "x-amz-date", "20260302T120000Z")

    assert failure(next_day, verifier(datetime(2026, 3, 2, 12, tzinfo=UTC))).reason == (
        "wrong credential scope"
    )


def test_date_header_missing_rejected() -> None:
    assert failure(replace_header(sign(), "x-amz-date", None)).reason == "no request date"


def test_date_header_malformed_rejected() -> None:
    error = failure(replace_header(sign(), "x-amz-date", "2026-03-01T12:00:00Z"))

    assert error.reason == "malformed request date"


@pytest.mark.parametrize(("region", "service"), [("us-east-1", "execute-api"), (REGION, "s3")])
def test_wrong_scope_rejected(region: str, service: str) -> None:
    error = failure(sign(region=region, service=service))

    assert error.reason == "wrong credential scope"


def test_tampered_body_rejected() -> None:
    request = sign("POST", body=b"signed body")
    tampered = SignedRequest(
        request.method, request.scheme, request.path, request.query, request.headers, b"other"
    )

    assert failure(tampered).reason == "signature mismatch"


def test_tampered_body_with_declared_hash_rejected() -> None:
    body = b"signed body"
    request = sign(
        "POST", body=body, headers={"X-Amz-Content-Sha256": hashlib.sha256(body).hexdigest()}
    )
    tampered = SignedRequest(
        request.method, request.scheme, request.path, request.query, request.headers, b"other"
    )

    assert failure(tampered).reason == "payload hash mismatch"


def test_tampered_query_rejected() -> None:
    request = sign(params={"PatientID": "A"})
    tampered = SignedRequest(
        request.method, request.scheme, request.path, "PatientID=B", request.headers, request.body
    )

    assert failure(tampered).reason == "signature mismatch"


def test_tampered_path_rejected() -> None:
    request = sign(path="/sites/north/studies")
    tampered = SignedRequest(
        request.method,
        request.scheme,
        "/dicomweb/sites/south/studies",
        request.query,
        request.headers,
        request.body,
    )

    assert failure(tampered).reason == "signature mismatch"


def test_tampered_method_rejected() -> None:
    request = sign("GET", path="/studies/1.2.3")
    tampered = SignedRequest(
        "DELETE", request.scheme, request.path, request.query, request.headers, request.body
    )

    assert failure(tampered).reason == "signature mismatch"


def test_unsigned_host_rejected() -> None:
    request = sign()
    authorization = request.header("authorization")
    assert authorization is not None
    without_host = authorization.replace(
        "SignedHeaders=host;x-amz-date", "SignedHeaders=x-amz-date"
    )

    assert failure(replace_header(request, "authorization", without_host)).reason == (
        "required header unsigned"
    )


def test_other_host_rejected() -> None:
    assert failure(replace_header(sign(), "host", "archive.example:8080")).reason == (
        "signature mismatch"
    )


def test_signed_header_missing_rejected() -> None:
    request = sign(headers={"Content-Type": "application/dicom"})
    assert "content-type" in str(request.header("authorization"))

    error = failure(replace_header(request, "content-type", None))

    assert error.reason == "signed header missing"


def test_missing_host_rejected() -> None:
    error = failure(replace_header(sign(), "host", None))

    assert error.reason == "signed header missing"
    assert "host" in str(error)


def test_identity_as_api_gateway_sets_it() -> None:
    caller = verifier().verify(sign())

    identity = identity_of(caller, "127.0.0.1", "client/1")

    assert identity["userArn"] == PRINCIPAL
    assert identity["accessKey"] == KEY
    assert identity["accountId"] == "111122223333"
    assert identity["sourceIp"] == "127.0.0.1"
    assert identity["userAgent"] == "client/1"


# The credentials file


def test_credential_secret_not_in_repr() -> None:
    assert SECRET not in repr(CREDENTIALS[KEY])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], 'only "credentials"'),
        ({"credentials": {}, "extra": 1}, 'only "credentials"'),
        ({"credentials": {}}, "non-empty object"),
        ({"credentials": {"short": {"secret": SECRET, "principal": PRINCIPAL}}}, "is invalid"),
        ({"credentials": {KEY: {"secret": SECRET}}}, 'exactly "secret" and "principal"'),
        ({"credentials": {KEY: {"secret": "short", "principal": PRINCIPAL}}}, "at least 16"),
        ({"credentials": {KEY: {"secret": SECRET, "principal": "jane"}}}, "principal 'jane'"),
    ],
)
def test_invalid_credentials_rejected(document: Any, message: str) -> None:
    with pytest.raises(CredentialsConfigError, match=message):
        parse_credentials(document)


def test_load_credentials_names_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text("{", encoding="utf-8")

    with pytest.raises(CredentialsConfigError, match=r"credentials\.json is unreadable"):
        load_credentials(path)


def test_closed_credentials_needs_both_files(tmp_path: Path) -> None:
    access = tmp_path / "access.json"
    access.write_text(json.dumps({"principals": {PRINCIPAL: {"north": ["query"]}}}))
    credentials = tmp_path / "credentials.json"
    credentials.write_text(
        json.dumps({"credentials": {KEY: {"secret": SECRET, "principal": PRINCIPAL}}})
    )

    assert closed_credentials(None, None) is None
    assert list(closed_credentials(access, credentials) or {}) == [KEY]
    with pytest.raises(CredentialsConfigError, match="give --credentials too"):
        closed_credentials(access, None)
    with pytest.raises(CredentialsConfigError, match="give --access too"):
        closed_credentials(None, credentials)
