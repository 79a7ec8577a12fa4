"""Count the AWS requests of code under test, and the DynamoDB capacity units they would consume.

Also builds the events that drive the Lambda handlers directly: an API Gateway REST proxy event
(``proxy_event``) and an SQS record (``sqs_record``).

``AwsCallCounter.counting()`` wraps ``BaseClient._make_api_call``, through which every botocore
client sends its requests (boto3's and pynamodb's alike), so no client of the code under test
is missed. Each call is recorded once, as AWS bills it when no retry happens.

moto returns fixed ``ConsumedCapacity`` figures whatever the item sizes, so the units are
computed from the item sizes, by the rules of the DynamoDB developer guide (on-demand and
provisioned capacity pages, read in 2026):

- a write takes 1 unit per KB (1,024 bytes) of the larger of the item before and after it,
  rounded up; a write in ``TransactWriteItems`` (a condition check too) takes twice that;
- each global secondary index that contains the item before or after the write takes 1 unit per
  KB of the item (every index here projects all attributes), and 2 writes when the write moves
  the item from one index key to another;
- a write whose condition fails takes the units of the item as it is; a cancelled
  transaction is counted as if it wrote, which is an upper bound;
- a read takes 1 unit per 4 KB, rounded up, halved when eventually consistent and doubled in
  ``TransactGetItems``; a Query sums the sizes of the items it evaluates, before its filter
  and projection, and rounds once; a GetItem that finds nothing takes the minimum.

The sizes before and after each write, and the items a Query evaluated, are read by a client
of the counter's own that is not counted, and its CPU time is kept in ``overhead_seconds`` so
that CPU figures can leave it out.
"""

from __future__ import annotations

import base64
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
from botocore.client import BaseClient

KB = 1024
READ_UNIT_BYTES = 4 * KB
_WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem"})


@dataclass
class Units:
    """DynamoDB capacity consumed, and the items read, by the counted calls."""

    write: float = 0.0
    read: float = 0.0
    items_read: int = 0
    # Write units by operation and table, such as ``TransactWriteItems index``.
    write_by: dict[str, float] = field(default_factory=dict)


class AwsCallCounter:
    """Counts AWS calls by service and operation while ``counting()`` is active."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        self._dynamodb = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=region)
        self._key_schemas: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.units = Units()
        self.overhead_seconds = 0.0
        # The bodies of every SQS SendMessage, so a benchmark can deliver them itself.
        self.sent_messages: list[str] = []
        # With ``trace`` set, one line per item written: operation, table, key, sizes, units.
        self.trace: list[str] | None = None

    def reset(self) -> None:
        with self._lock:
            self.calls = Counter()
            self.units = Units()
            self.overhead_seconds = 0.0
            self.sent_messages = []

    def count(self, service: str, operation: str = "") -> int:
        """Return the calls of ``service`` (``s3``, ``dynamodb``...), of one operation if named."""
        prefix = f"{service}:{operation}" if operation else f"{service}:"
        return sum(n for name, n in self.calls.items() if name.startswith(prefix))

    @contextmanager
    def counting(self) -> Iterator[AwsCallCounter]:
        original = BaseClient._make_api_call
        counter = self

        def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if client is counter._dynamodb:
                return original(client, operation, params)
            return counter._call(client, operation, params, original)

        BaseClient._make_api_call = make_api_call
        try:
            yield self
        finally:
            BaseClient._make_api_call = original

    def _call(self, client: Any, operation: str, params: dict[str, Any], original: Any) -> Any:
        service = client.meta.service_model.service_name
        name = f"{service}:{operation}"
        if service == "s3" and operation == "GetObject" and "Range" in params:
            name += " (range)"
        with self._lock:
            self.calls[name] += 1
            if service == "sqs" and operation == "SendMessage":
                self.sent_messages.append(params["MessageBody"])
        if service != "dynamodb":
            return original(client, operation, params)
        started = time.thread_time()
        before = self._items_before(operation, params)
        self._add_overhead(started)
        try:
            response = original(client, operation, params)
        except Exception:
            started = time.thread_time()
            self._add_units(operation, params, None, before)
            self._add_overhead(started)
            raise
        started = time.thread_time()
        self._add_units(operation, params, response, before)
        self._add_overhead(started)
        return response

    def _add_overhead(self, started: float) -> None:
        with self._lock:
            self.overhead_seconds += time.thread_time() - started

    # The items a write changes, read before and after it.

    def _write_targets(self, operation: str, params: dict[str, Any]) -> list[tuple[str, Any, int]]:
        """Return (table, key, unit multiplier) of each item that ``operation`` writes."""
        if operation in _WRITE_OPERATIONS:
            key = params.get("Key") or self._key_of(params["TableName"], params["Item"])
            return [(params["TableName"], key, 1)]
        if operation == "TransactWriteItems":
            targets = []
            for entry in params["TransactItems"]:
                ((_kind, request),) = entry.items()
                key = request.get("Key") or self._key_of(request["TableName"], request["Item"])
                targets.append((request["TableName"], key, 2))
            return targets
        if operation == "BatchWriteItem":
            targets = []
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    put, delete = request.get("PutRequest"), request.get("DeleteRequest")
                    key = delete["Key"] if delete else self._key_of(table, put["Item"])
                    targets.append((table, key, 1))
            return targets
        return []

    def _items_before(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any] | None]:
        return [self._get(table, key) for table, key, _ in self._write_targets(operation, params)]

    def _add_units(
        self,
        operation: str,
        params: dict[str, Any],
        response: dict[str, Any] | None,
        before: list[dict[str, Any] | None],
    ) -> None:
        write = 0.0
        write_by: dict[str, float] = {}
        for (table, key, multiplier), old in zip(
            self._write_targets(operation, params), before, strict=True
        ):
            new = self._get(table, key)
            size = max(item_size(old or {}), item_size(new or {}))
            units = multiplier * math.ceil(max(size, 1) / KB) + self._index_writes(table, old, new)
            write += units
            name = f"{operation} {table}"
            write_by[name] = write_by.get(name, 0.0) + units
            if self.trace is not None:
                self.trace.append(
                    f"{operation} {table} {_key_text(key)} {item_size(old or {})}"
                    f"->{item_size(new or {})} B, {units:g} units"
                )
        read, items = self._read_units(operation, params, response) if response else (0.0, 0)
        with self._lock:
            self.units.write += write
            self.units.read += read
            self.units.items_read += items
            for name, value in write_by.items():
                self.units.write_by[name] = self.units.write_by.get(name, 0.0) + value

    def _index_writes(
        self, table: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> float:
        units = 0.0
        for index_key in self._schema(table)[1].values():
            old_key = _index_key(old, index_key)
            new_key = _index_key(new, index_key)
            if old_key is None and new_key is None:
                continue
            if old_key is not None and new_key is not None and old_key != new_key:
                units += math.ceil(max(item_size(old or {}), 1) / KB)
                units += math.ceil(max(item_size(new or {}), 1) / KB)
                continue
            if old_key == new_key and old == new:
                # An update that changes no attribute writes nothing to the index.
                continue
            size = max(item_size(old or {}), item_size(new or {}))
            units += math.ceil(max(size, 1) / KB)
        return units

    # Reads.

    def _read_units(
        self, operation: str, params: dict[str, Any], response: dict[str, Any]
    ) -> tuple[float, int]:
        factor = 1.0 if params.get("ConsistentRead") else 0.5
        if operation == "GetItem":
            item = self._get(params["TableName"], params["Key"])
            return factor * _read_units_of(item_size(item or {})), 1 if item else 0
        if operation == "Query":
            evaluated = self._evaluated_items(params)
            return factor * _read_units_of(sum(map(item_size, evaluated))), len(evaluated)
        if operation == "BatchGetItem":
            units, items = 0.0, 0
            for table, request in params["RequestItems"].items():
                batch_factor = 1.0 if request.get("ConsistentRead") else 0.5
                for key in request["Keys"]:
                    item = self._get(table, key)
                    units += batch_factor * _read_units_of(item_size(item or {}))
                    items += 1 if item else 0
            return units, items
        if operation == "TransactGetItems":
            units, items = 0.0, 0
            for entry in params["TransactItems"]:
                request = entry["Get"]
                item = self._get(request["TableName"], request["Key"])
                units += 2 * _read_units_of(item_size(item or {}))
                items += 1 if item else 0
            return units, items
        if operation == "Scan":
            count = int(response.get("ScannedCount", 0))
            # NOTE: a Scan is rated by its returned items only, which undercounts a filtered Scan.
            return factor * _read_units_of(sum(map(item_size, response.get("Items", [])))), count
        return 0.0, 0

    def _evaluated_items(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Repeat a Query without its filter and projection, to see every item it evaluated."""
        dropped = {
            "FilterExpression",
            "ProjectionExpression",
            "AttributesToGet",
            "Select",
            "ReturnConsumedCapacity",
            "QueryFilter",
            "ConditionalOperator",
        }
        query = {name: value for name, value in params.items() if name not in dropped}
        used = set(_placeholders(query))
        for mapping in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
            if mapping in query:
                query[mapping] = {k: v for k, v in query[mapping].items() if k in used}
                if not query[mapping]:
                    del query[mapping]
        return list(self._dynamodb.query(**query).get("Items", []))

    # Tables.

    def _get(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        response = self._dynamodb.get_item(TableName=table, Key=dict(key), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _schema(self, table: str) -> tuple[list[str], dict[str, list[str]]]:
        """Return the key attributes of ``table`` and of each of its global indexes."""
        schema = self._key_schemas.get(table)
        if schema is None:
            description = self._dynamodb.describe_table(TableName=table)["Table"]
            keys = [element["AttributeName"] for element in description["KeySchema"]]
            indexes = {
                index["IndexName"]: [element["AttributeName"] for element in index["KeySchema"]]
                for index in description.get("GlobalSecondaryIndexes", [])
            }
            schema = (keys, indexes)
            self._key_schemas[table] = schema
        return schema

    def _key_of(self, table: str, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self._schema(table)[0]}


def _key_text(key: Mapping[str, Any]) -> str:
    return " ".join(str(next(iter(value.values())))[:40] for value in key.values())


def _index_key(item: dict[str, Any] | None, attributes: list[str]) -> tuple[Any, ...] | None:
    if item is None or any(name not in item for name in attributes):
        return None
    return tuple(repr(item[name]) for name in attributes)


def _placeholders(query: dict[str, Any]) -> Iterator[str]:
    """Yield the ``#name`` and ``:value`` placeholders of a query's key condition."""
    condition = str(query.get("KeyConditionExpression", ""))
    for token in condition.replace("(", " ").replace(")", " ").replace(",", " ").split():
        if token.startswith(("#", ":")):
            yield token


def _read_units_of(size: int) -> float:
    return float(max(1, math.ceil(size / READ_UNIT_BYTES)))


def item_size(item: Mapping[str, Any]) -> int:
    """Return the size of an item in DynamoDB's wire format, as DynamoDB bills it."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "N":
        return _number_size(str(data))
    if kind == "B":
        return len(data if isinstance(data, bytes) else base64.b64decode(data))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(element).encode()) for element in data)
    if kind == "NS":
        return sum(_number_size(str(element)) for element in data)
    if kind == "BS":
        return sum(len(element) for element in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(element) for element in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in data.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def _number_size(text: str) -> int:
    """Return the bytes of a number: 1 per two significant digits, plus 1."""
    digits = Decimal(text).normalize().as_tuple().digits
    return (len(digits) + 1) // 2 + 1


def proxy_event(
    method: str,
    path: str,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> dict[str, Any]:
    """Return the API Gateway REST proxy event of a request, as the local HTTP adapter builds it."""
    headers = {"Host": "127.0.0.1", "X-Forwarded-Proto": "http", **(headers or {})}
    query = dict(query or {})
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {
            "stage": "dicomweb",
            "requestId": str(uuid.uuid4()),
            "path": f"/dicomweb{path}",
            "httpMethod": method,
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": base64.b64encode(body).decode("ascii") if body else None,
        "isBase64Encoded": bool(body),
    }


def sqs_record(body: str) -> dict[str, Any]:
    """Return the record of an SQS event that delivers ``body`` for the first time."""
    message_id = str(uuid.uuid4())
    return {
        "messageId": message_id,
        "receiptHandle": message_id,
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "eventSource": "aws:sqs",
    }
