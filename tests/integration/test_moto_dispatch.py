"""The front's direct dispatch against moto's own, request by request, errors included.

A worker process serves the same moto backends through two fronts. Each test resets moto,
seeds its random numbers, sends a sequence of requests through one front, and does the same
through the other. Request ids, message ids and receipt handles then come out the same, so
every status, header (except Date) and body must be equal.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cirrus.local.moto_process import LOOPBACK

# The Host header of every request: moto builds queue URLs from it.
HOST = "localhost:4566"
TABLE = "dispatch"
QUEUE_URL = f"http://{HOST}/123456789012/dispatch"
DYNAMODB = "DynamoDB_20120810"
SQS = "AmazonSQS"
EVENTS = "AWSEvents"
SERVICES = {DYNAMODB: "dynamodb", SQS: "sqs", EVENTS: "events"}

Body = dict[str, Any] | str
# A request's body, or a function of the parsed bodies of the responses before it.
BodyOrBuilder = Body | Callable[[list[Any]], Body]


@dataclass(frozen=True)
class Step:
    target: str
    body: BodyOrBuilder
    # False for responses with creation times, which differ between the two runs.
    compared: bool = True


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Fronts:
    moto_port: int
    direct_port: int
    through_moto_port: int


@pytest.fixture(scope="module")
def fronts() -> Iterator[Fronts]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.moto_fronts_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    ports = dict(field.split("=") for field in worker.stdout.readline().split())
    try:
        yield Fronts(int(ports["moto"]), int(ports["direct"]), int(ports["through_moto"]))
    finally:
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait(timeout=30)


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> Response:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        kept = {
            name.lower(): value for name, value in response.getheaders() if name.lower() != "date"
        }
        return Response(response.status, kept, data)
    finally:
        connection.close()


def _signed_headers(target: str) -> dict[str, str]:
    prefix, _, _ = target.partition(".")
    scope = f"testing/20261206/us-east-1/{SERVICES[prefix]}/aws4_request"
    return {
        "Host": HOST,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0",
        "X-Amz-Target": target,
        "Content-Type": "application/x-amz-json-1.0",
        "User-Agent": "Boto3/1.40 md/Botocore#1.40 cfg/retry-mode#legacy Botocore/1.40",
    }


def _run(fronts: Fronts, port: int, steps: list[Step]) -> list[Response]:
    """Reset moto, seed its random numbers and send ``steps`` to the front at ``port``."""
    assert _post(fronts.moto_port, "/moto-api/reset", b"", {}).status == 200
    assert _post(fronts.moto_port, "/moto-api/seed?a=42", b"", {}).status == 200
    responses: list[Response] = []
    parsed: list[Any] = []
    for step in steps:
        body = step.body(parsed) if callable(step.body) else step.body
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        response = _post(port, "/", data, _signed_headers(step.target))
        responses.append(response)
        parsed.append(json.loads(response.body) if response.body.startswith(b"{") else None)
    return responses


def assert_same_responses(fronts: Fronts, steps: list[Step]) -> list[Response]:
    direct = _run(fronts, fronts.direct_port, steps)
    through_moto = _run(fronts, fronts.through_moto_port, steps)
    for number, (step, ours, theirs) in enumerate(zip(steps, direct, through_moto, strict=True)):
        if not step.compared:
            continue
        where = f"step {number}, {step.target}"
        assert ours.status == theirs.status, where
        assert ours.headers == theirs.headers, where
        assert ours.body == theirs.body, where
    return direct


def _blob(data: bytes) -> str:
    return base64.b64encode(data).decode()


KEY = {"pk": {"S": "p1"}, "sk": {"S": "s1"}}
ITEM = {
    **KEY,
    "gpk": {"S": "g"},
    "gsk": {"S": "0001"},
    "name": {"S": "Müller^Änne 中"},
    "count": {"N": "3"},
    "raw": {"B": _blob(b"\x00\xff binary")},
    "tags": {"SS": ["a", "b"]},
    "sizes": {"NS": ["1", "2.5"]},
    "blobs": {"BS": [_blob(b"\x01"), _blob(b"\x02")]},
    "nested": {"M": {"list": {"L": [{"S": "x"}, {"N": "1"}, {"BOOL": True}, {"NULL": True}]}}},
}
CREATE_TABLE = Step(
    f"{DYNAMODB}.CreateTable",
    {
        "TableName": TABLE,
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "gpk", "gsk")
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "by-g",
                "KeySchema": [
                    {"AttributeName": "gpk", "KeyType": "HASH"},
                    {"AttributeName": "gsk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    },
    compared=False,
)
NOT_EXISTS = {"ConditionExpression": "attribute_not_exists(pk)"}


def _put(item: dict[str, Any], **extra: Any) -> Step:
    return Step(f"{DYNAMODB}.PutItem", {"TableName": TABLE, "Item": item, **extra})


def _update(key: dict[str, Any], **extra: Any) -> Step:
    return Step(f"{DYNAMODB}.UpdateItem", {"TableName": TABLE, "Key": key, **extra})


def _instance(number: int) -> dict[str, Any]:
    return {
        "pk": {"S": "p1"},
        "sk": {"S": f"i{number:03d}"},
        "gpk": {"S": "g"},
        "gsk": {"S": f"{number:04d}"},
        "note": {"S": "x" * number},
    }


def test_item_writes_same(fronts: Fronts) -> None:
    counter = {
        "UpdateExpression": "ADD #c :one SET #v = :v",
        "ExpressionAttributeNames": {"#c": "count", "#v": "version"},
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":v": {"S": "v2"}},
    }
    steps = [
        CREATE_TABLE,
        _put(ITEM, **NOT_EXISTS),
        _put(ITEM, **NOT_EXISTS),
        _put(ITEM, **NOT_EXISTS, ReturnValuesOnConditionCheckFailure="ALL_OLD"),
        _put({**ITEM, "count": {"N": "4"}}, ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL"),
        _put({"pk": {"S": "p1"}}),
        _put({**KEY, "empty": {"SS": []}}),
        _put({**KEY, "gpk": {"S": ""}}),
        Step(f"{DYNAMODB}.PutItem", {"TableName": "missing", "Item": KEY}),
        _update(KEY, **counter, ReturnValues="ALL_NEW"),
        _update(KEY, **counter, ConditionExpression="#v = :v"),
        _update({"pk": {"S": "p2"}, "sk": {"S": "s"}}, **counter, ReturnValues="UPDATED_NEW"),
        _update(KEY, UpdateExpression="SET #v = :v", ExpressionAttributeNames={"#v": "version"}),
        _update(KEY, **{**counter, "ExpressionAttributeValues": {":one": {"N": "1"}}}),
        _update(KEY, UpdateExpression="SET pk = :v", ExpressionAttributeValues={":v": {"S": "x"}}),
        _update(KEY, UpdateExpression="", ExpressionAttributeValues={}),
    ]

    assert_same_responses(fronts, steps)


def test_transactions_same(fronts: Fronts) -> None:
    def put(number: int, **extra: Any) -> dict[str, Any]:
        return {"Put": {"TableName": TABLE, "Item": _instance(number), **NOT_EXISTS, **extra}}

    study_update = {
        "Update": {
            "TableName": TABLE,
            "Key": KEY,
            "UpdateExpression": "ADD #c :n",
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeNames": {"#c": "count"},
            "ExpressionAttributeValues": {":n": {"N": "2"}},
        }
    }

    def check(minimum: int) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": TABLE,
                "Key": {"pk": {"S": "p2"}, "sk": {"S": "s2"}},
                "ConditionExpression": "#c > :minimum",
                "ExpressionAttributeNames": {"#c": "count"},
                "ExpressionAttributeValues": {":minimum": {"N": str(minimum)}},
            }
        }

    transact = f"{DYNAMODB}.TransactWriteItems"
    steps = [
        CREATE_TABLE,
        _put(ITEM),
        _put({"pk": {"S": "p2"}, "sk": {"S": "s2"}, "count": {"N": "1"}}),
        Step(transact, {"TransactItems": [put(1), put(2), study_update, check(0)]}),
        Step(transact, {"TransactItems": [put(3), put(1), study_update]}),
        Step(transact, {"TransactItems": [put(3), study_update, check(5)]}),
        Step(
            transact,
            {"TransactItems": [put(4), put(2, ReturnValuesOnConditionCheckFailure="ALL_OLD")]},
        ),
        Step(transact, {"TransactItems": [put(5), put(5)]}),
        Step(transact, {"TransactItems": []}),
        Step(transact, {"TransactItems": [put(6)], "ReturnConsumedCapacity": "INDEXES"}),
        Step(
            transact,
            {"TransactItems": [{"Put": {"TableName": "missing", "Item": _instance(7)}}]},
        ),
        Step(f"{DYNAMODB}.GetItem", {"TableName": TABLE, "Key": KEY, "ConsistentRead": True}),
    ]

    direct = assert_same_responses(fronts, steps)

    # The sequence reached the branches it is meant to compare.
    assert direct[3].status == 200
    cancelled = [json.loads(direct[number].body) for number in (4, 5, 6)]
    assert [error["__type"].split("#")[-1] for error in cancelled] == [
        "TransactionCanceledException"
    ] * 3
    assert "Item" in cancelled[2]["CancellationReasons"][1]


def test_item_reads_same(fronts: Fronts) -> None:
    get, batch_get, query = (f"{DYNAMODB}.{name}" for name in ("GetItem", "BatchGetItem", "Query"))
    in_partition = {
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": "p1"}},
    }
    steps = [
        CREATE_TABLE,
        _put(ITEM),
        *(_put(_instance(number)) for number in range(1, 8)),
        Step(get, {"TableName": TABLE, "Key": KEY}),
        Step(
            get,
            {
                "TableName": TABLE,
                "Key": KEY,
                "ProjectionExpression": "#n, raw, nested.list[1]",
                "ExpressionAttributeNames": {"#n": "name"},
            },
        ),
        Step(get, {"TableName": TABLE, "Key": KEY, "ProjectionExpression": "#n, raw"}),
        Step(get, {"TableName": TABLE, "Key": {"pk": {"S": "p9"}, "sk": {"S": "s"}}}),
        Step(get, {"TableName": TABLE, "Key": {"pk": {"S": "p1"}}}),
        Step(get, {"TableName": "missing", "Key": KEY}),
        Step(
            batch_get,
            {
                "RequestItems": {
                    TABLE: {
                        "Keys": [
                            KEY,
                            {"pk": {"S": "p1"}, "sk": {"S": "i001"}},
                            {**KEY, "pk": {"S": "x"}},
                        ],
                        "ConsistentRead": True,
                    }
                }
            },
        ),
        Step(batch_get, {"RequestItems": {"missing": {"Keys": [KEY]}}}),
        Step(query, {"TableName": TABLE, **in_partition}),
        Step(query, {"TableName": TABLE, **in_partition, "Limit": 3, "ScanIndexForward": False}),
        Step(
            query,
            lambda parsed: {
                "TableName": TABLE,
                **in_partition,
                "Limit": 3,
                "ExclusiveStartKey": parsed[-1]["LastEvaluatedKey"],
            },
        ),
        Step(
            query,
            {
                "TableName": TABLE,
                "IndexName": "by-g",
                "KeyConditionExpression": "gpk = :g AND begins_with(gsk, :prefix)",
                "ExpressionAttributeValues": {":g": {"S": "g"}, ":prefix": {"S": "000"}},
                "Select": "COUNT",
            },
        ),
        Step(query, {"TableName": TABLE, "KeyConditionExpression": "pk = :pk"}),
        Step(query, {"TableName": TABLE, **in_partition, "Select": "BOGUS"}),
    ]

    assert_same_responses(fronts, steps)


def test_queue_actions_same(fronts: Fronts) -> None:
    send, send_batch, receive, delete_batch = (
        f"{SQS}.{name}"
        for name in ("SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch")
    )
    attributes = {
        "kind": {"DataType": "String", "StringValue": "created"},
        "size": {"DataType": "Number", "StringValue": "12"},
        "raw": {"DataType": "Binary", "BinaryValue": _blob(b"\x00\x01")},
    }

    def deletes(parsed: list[Any]) -> dict[str, Any]:
        handles = [message["ReceiptHandle"] for message in parsed[-1]["Messages"]]
        entries = [{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(handles)]
        return {"QueueUrl": QUEUE_URL, "Entries": [*entries, {"Id": "bad", "ReceiptHandle": "x"}]}

    steps = [
        Step(f"{SQS}.CreateQueue", {"QueueName": "dispatch"}),
        Step(send, {"QueueUrl": QUEUE_URL, "MessageBody": '{"key": "Müller"}'}),
        Step(send, {"QueueUrl": QUEUE_URL, "MessageBody": "b", "MessageAttributes": attributes}),
        Step(send, {"QueueUrl": QUEUE_URL, "MessageBody": "late", "DelaySeconds": 901}),
        Step(send, {"QueueUrl": f"http://{HOST}/123456789012/missing", "MessageBody": "x"}),
        Step(
            send_batch,
            {
                "QueueUrl": QUEUE_URL,
                "Entries": [{"Id": str(n), "MessageBody": f"m{n}"} for n in range(3)],
            },
        ),
        Step(send_batch, {"QueueUrl": QUEUE_URL, "Entries": []}),
        Step(
            send_batch,
            {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "a", "MessageBody": "1"}] * 2},
        ),
        Step(
            receive,
            {
                "QueueUrl": QUEUE_URL,
                "MaxNumberOfMessages": 10,
                "MessageAttributeNames": ["All"],
                "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
            },
        ),
        Step(delete_batch, deletes),
        Step(receive, {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": 10, "VisibilityTimeout": 0}),
        Step(receive, {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": 11}),
        Step(delete_batch, {"QueueUrl": QUEUE_URL, "Entries": []}),
    ]

    direct = assert_same_responses(fronts, steps)

    # The sequence reached the branches it is meant to compare.
    received = json.loads(direct[8].body)
    assert len(received["Messages"]) == 5
    assert direct[4].status == 400


def test_events_same(fronts: Fronts) -> None:
    put_events = f"{EVENTS}.PutEvents"
    entry = {"Source": "cirrus.test", "DetailType": "Object Created", "Detail": '{"k": 1}'}
    steps = [
        Step(put_events, {"Entries": [entry, {**entry, "Detail": '{"k": 2}'}]}),
        Step(put_events, {"Entries": [entry, {"Source": "cirrus.test"}]}),
        Step(put_events, {"Entries": [{**entry, "EventBusName": "missing"}]}),
        Step(put_events, {"Entries": [entry] * 11}),
    ]

    assert_same_responses(fronts, steps)


def test_unusual_requests_same(fronts: Fronts) -> None:
    steps = [
        Step(f"{DYNAMODB}.ListTables", {}),
        Step(f"{DYNAMODB}.ListTables", "&Action=ListQueues"),
        Step(f"{DYNAMODB}.ListTables", "not json"),
        Step(f"{DYNAMODB}.NoSuchAction", {}),
        Step(f"{SQS}.ListQueues", {"QueueNamePrefix": "dis"}),
    ]

    assert_same_responses(fronts, steps)
