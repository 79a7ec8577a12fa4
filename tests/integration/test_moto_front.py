"""moto's lean front: DynamoDB, SQS and EventBridge over kept-alive connections, same backends."""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from cirrus.aws import AwsClients
from cirrus.config import Settings
from cirrus.index.models import bind_index_model
from cirrus.local.moto_front import start_front
from cirrus.local.moto_process import LOOPBACK, MotoProcess


@pytest.fixture
def front_settings(settings: Settings, moto_server: MotoProcess) -> Settings:
    return dataclasses.replace(settings, json_endpoint_url=moto_server.front_url)


def test_index_shared_with_moto_server(front_settings: Settings, settings: Settings) -> None:
    front = boto3.client("dynamodb", endpoint_url=front_settings.json_endpoint)
    server = boto3.client("dynamodb", endpoint_url=settings.endpoint_url)
    key = {"pk": {"S": "p"}, "sk": {"S": "s"}}

    front.put_item(TableName=settings.table, Item={**key, "note": {"S": "through the front"}})
    stored = server.get_item(TableName=settings.table, Key=key, ConsistentRead=True)["Item"]

    assert stored["note"] == {"S": "through the front"}
    assert bind_index_model(front_settings).Meta.host == front_settings.json_endpoint_url
    assert bind_index_model(settings).Meta.host == settings.endpoint_url


def test_queue_shared_with_moto_server(front_settings: Settings, settings: Settings) -> None:
    front, server = AwsClients(front_settings).sqs, AwsClients(settings).sqs
    url = server.create_queue(QueueName=f"{settings.deployment}-front")["QueueUrl"]

    front.send_message(QueueUrl=url, MessageBody="first")
    received = server.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    server.send_message(QueueUrl=url, MessageBody="second")
    # A long poll on the front keeps its connection until the message is there.
    again = front.receive_message(QueueUrl=url, WaitTimeSeconds=2, VisibilityTimeout=0)

    assert [message["Body"] for message in received] == ["first"]
    assert [message["Body"] for message in again["Messages"]] == ["second"]


def test_events_through_front(front_settings: Settings) -> None:
    events = AwsClients(front_settings).events

    response = events.put_events(
        Entries=[{"Source": "cirrus.test", "DetailType": "Test", "Detail": "{}"}]
    )

    assert response["FailedEntryCount"] == 0


def test_error_response_kept(front_settings: Settings) -> None:
    front = boto3.client("dynamodb", endpoint_url=front_settings.json_endpoint)

    with pytest.raises(ClientError) as raised:
        front.get_item(TableName="no-such-table", Key={"pk": {"S": "p"}, "sk": {"S": "s"}})

    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_s3_request_rejected(front_settings: Settings) -> None:
    s3 = boto3.client("s3", endpoint_url=front_settings.json_endpoint)

    with pytest.raises(ClientError) as raised:
        s3.list_buckets()

    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def signed_headers(service: str, target: str) -> dict[str, str]:
    """Headers with the parts of a SigV4 request that the front reads; moto checks no signature."""
    scope = f"testing/20261205/us-east-1/{service}/aws4_request"
    return {
        "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0",
        "X-Amz-Target": target,
        "Content-Type": "application/x-amz-json-1.0",
    }


@pytest.fixture
def front_address(moto_server: MotoProcess) -> tuple[str, int]:
    parts = urlsplit(moto_server.front_url)
    assert parts.hostname == LOOPBACK
    assert parts.port is not None
    return parts.hostname, parts.port


def test_connection_kept_alive(front_address: tuple[str, int]) -> None:
    connection = http.client.HTTPConnection(*front_address, timeout=10)
    headers = signed_headers("dynamodb", "DynamoDB_20120810.ListTables")
    try:
        statuses = []
        for _ in range(3):
            connection.request("POST", "/", body=b"{}", headers=headers)
            response = connection.getresponse()
            json.loads(response.read())
            statuses.append(response.status)
            local_port = connection.sock.getsockname()[1]  # type: ignore[union-attr]
            if len(statuses) == 1:
                first_port = local_port
            assert local_port == first_port
    finally:
        connection.close()

    assert statuses == [200, 200, 200]


def test_chunked_body_rejected(front_address: tuple[str, int]) -> None:
    connection = http.client.HTTPConnection(*front_address, timeout=10)
    headers = signed_headers("dynamodb", "DynamoDB_20120810.ListTables")
    try:
        connection.request("POST", "/", body=iter([b"{}"]), headers=headers)
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()

    assert response.status == 411
    assert body["__type"] == "LengthRequired"


def test_oversized_body_rejected_before_it_is_read(front_address: tuple[str, int]) -> None:
    connection = http.client.HTTPConnection(*front_address, timeout=10)
    headers = signed_headers("dynamodb", "DynamoDB_20120810.ListTables")
    headers["Content-Length"] = str(10**15)
    try:
        connection.putrequest("POST", "/", skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(b"{}")
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()

    assert response.status == 413
    assert body["__type"] == "RequestEntityTooLarge"


def test_unsigned_request_rejected(front_address: tuple[str, int]) -> None:
    connection = http.client.HTTPConnection(*front_address, timeout=10)
    try:
        connection.request("POST", "/", body=b"{}", headers={"Content-Type": "text/plain"})
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()

    assert response.status == 400
    assert body["__type"] == "InvalidEndpoint"
    assert "dynamodb" in body["message"]


@pytest.fixture
def own_front() -> Iterator[tuple[str, int, ThreadingHTTPServer]]:
    """A front in this test process, so that a test can make its dispatch fail."""
    server, port = start_front(LOOPBACK)
    yield LOOPBACK, port, server
    server.shutdown()
    server.server_close()


def test_moto_exception_is_500(
    own_front: tuple[str, int, ThreadingHTTPServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail(url: str, headers: object, body: bytes) -> None:
        raise RuntimeError("injected")

    server = own_front[2]
    monkeypatch.setattr(server, "dispatch", fail)
    connection = http.client.HTTPConnection(*own_front[:2], timeout=10)
    headers = signed_headers("dynamodb", "DynamoDB_20120810.ListTables")
    try:
        connection.request("POST", "/", body=b"{}", headers=headers)
        failed = connection.getresponse()
        failed_body = json.loads(failed.read())
        monkeypatch.undo()
        # The connection still serves the next request.
        connection.request("POST", "/", body=b"{}", headers=headers)
        served = connection.getresponse()
        served.read()
    finally:
        connection.close()

    assert failed.status == 500
    assert failed_body["__type"] == "InternalFailure"
    assert served.status == 200
    assert any("moto front: request failed" in r.getMessage() for r in caplog.records)


def _raw_exchange(address: tuple[str, int], request: bytes) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it."""
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def _raw_request(version: str, extra_headers: str) -> bytes:
    headers = signed_headers("dynamodb", "DynamoDB_20120810.ListTables")
    lines = [f"POST / {version}", "Host: 127.0.0.1", "Content-Length: 2"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join([*lines, *extra_headers.splitlines()]) + "\r\n\r\n{}").encode()


def test_connection_close_honoured(front_address: tuple[str, int]) -> None:
    received = _raw_exchange(front_address, _raw_request("HTTP/1.1", "Connection: close"))

    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"TableNames" in received


def test_http_1_0_request_served(front_address: tuple[str, int]) -> None:
    received = _raw_exchange(front_address, _raw_request("HTTP/1.0", ""))

    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"TableNames" in received
