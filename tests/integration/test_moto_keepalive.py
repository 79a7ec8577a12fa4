"""The local stack's moto child process keeps HTTP connections open between requests.

Each test talks to a real ``cirrus.local.moto_process`` child over 127.0.0.1: raw requests
through ``http.client`` check the framing on one connection, and boto3 checks that S3, SQS
and DynamoDB behave as they do behind Werkzeug's own handler.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import boto3
import pytest

from cirrus.local.moto_process import MotoProcess, start_moto, use_local_credentials

TABLE_TARGET = "DynamoDB_20120810"
LIST_TABLES_HEADERS = {
    "Content-Type": "application/x-amz-json-1.0",
    "X-Amz-Target": f"{TABLE_TARGET}.ListTables",
    "Authorization": ("AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/aws4_request"),
}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoProcess]:
    use_local_credentials()
    process = start_moto()
    yield process
    process.stop()


@pytest.fixture
def connection(moto: MotoProcess) -> Iterator[http.client.HTTPConnection]:
    address = urlsplit(moto.endpoint_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    yield connection
    connection.close()


def _list_tables(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
    connection.request("POST", "/", body=b"{}", headers=LIST_TABLES_HEADERS)
    return connection.getresponse()


def test_connection_reused(connection: http.client.HTTPConnection) -> None:
    first = _list_tables(connection)
    assert first.status == 200
    assert first.getheader("Connection") != "close"
    assert "TableNames" in json.loads(first.read())
    socket_before = connection.sock
    second = _list_tables(connection)
    assert second.status == 200
    assert "TableNames" in json.loads(second.read())
    assert connection.sock is socket_before


def test_unread_body_discarded(connection: http.client.HTTPConnection) -> None:
    # moto answers a GET of an unknown path without reading its body; the next request on the
    # connection must still parse.
    connection.request("GET", "/not-a-bucket-path/", body=b"x" * 5000)
    connection.getresponse().read()
    response = _list_tables(connection)
    assert response.status == 200
    assert "TableNames" in json.loads(response.read())


def test_chunked_request_body(connection: http.client.HTTPConnection) -> None:
    # http.client sends an iterable body with chunked transfer encoding.
    connection.request("POST", "/", body=iter([b"{", b"}"]), headers=LIST_TABLES_HEADERS)
    first = connection.getresponse()
    assert first.status == 200
    first.read()
    second = _list_tables(connection)
    assert second.status == 200
    assert "TableNames" in json.loads(second.read())


def test_s3_object_round_trip(moto: MotoProcess) -> None:
    s3 = boto3.client("s3", endpoint_url=moto.endpoint_url)
    s3.create_bucket(Bucket="keepalive-test")
    body = bytes(range(256)) * 4000
    s3.put_object(Bucket="keepalive-test", Key="a/b.dcm", Body=body, Metadata={"sop_uid": "1.2"})
    head = s3.head_object(Bucket="keepalive-test", Key="a/b.dcm")
    assert head["ContentLength"] == len(body)
    assert head["Metadata"] == {"sop_uid": "1.2"}
    fetched = s3.get_object(Bucket="keepalive-test", Key="a/b.dcm", Range="bytes=10-19")
    assert fetched["Body"].read() == body[10:20]
    s3.delete_object(Bucket="keepalive-test", Key="a/b.dcm")
    assert s3.list_objects_v2(Bucket="keepalive-test")["KeyCount"] == 0


def test_sqs_and_dynamodb_requests(moto: MotoProcess) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto.endpoint_url)
    queue = sqs.create_queue(QueueName="keepalive-test")["QueueUrl"]
    for number in range(20):
        sqs.send_message(QueueUrl=queue, MessageBody=str(number))
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 10
    dynamodb = boto3.client("dynamodb", endpoint_url=moto.endpoint_url)
    dynamodb.create_table(
        TableName="keepalive-test",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="keepalive-test", Item={"pk": {"S": "one"}})
    item = dynamodb.get_item(TableName="keepalive-test", Key={"pk": {"S": "one"}})
    assert item["Item"] == {"pk": {"S": "one"}}
    missing = dynamodb.get_item(TableName="keepalive-test", Key={"pk": {"S": "two"}})
    assert "Item" not in missing
