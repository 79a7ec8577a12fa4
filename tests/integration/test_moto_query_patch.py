"""The local stack's moto Query patch returns exactly what stock moto returns.

The same random writes and Queries go to two servers on 127.0.0.1: the patched moto child of
the test session, and a stock moto server in this process (which never applies the patches).
Every response page must be equal, LastEvaluatedKey and ScannedCount included.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from cirrus.local.moto_process import MotoProcess

HASH_VALUES = ["p0", "p1", "p2", "p3"]
G1_VALUES = ["a", "b", "c"]
G2_VALUES = ["x", "y"]


@pytest.fixture(scope="module")
def stock_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _create_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": attribute, "AttributeType": kind}
            for attribute, kind in [
                ("pk", "S"),
                ("sk", "S"),
                ("g1pk", "S"),
                ("g1sk", "S"),
                ("g2pk", "S"),
                ("g2sk", "N"),
            ]
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": f"{prefix}pk", "KeyType": "HASH"},
                    {"AttributeName": f"{prefix}sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, prefix in [("by-g1", "g1"), ("by-g2", "g2")]
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def _random_item(rng: random.Random) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": {"S": rng.choice(HASH_VALUES)},
        "sk": {"S": rng.choice("abcd") + str(rng.randrange(30))},
        "n": {"N": str(rng.randrange(10))},
    }
    if rng.random() < 0.8:
        item["g1pk"] = {"S": rng.choice(G1_VALUES)}
    if rng.random() < 0.8:
        item["g1sk"] = {"S": rng.choice(["", "m", "mm", "mn", "n"]) + str(rng.randrange(4))}
    if rng.random() < 0.7:
        item["g2pk"] = {"S": rng.choice(G2_VALUES)}
        item["g2sk"] = {"N": str(rng.choice([-5, 0, 2, 2.5, 10, 100]))}
    return item


def _key(item: dict[str, Any]) -> dict[str, Any]:
    return {"pk": item["pk"], "sk": item["sk"]}


def _random_write(rng: random.Random, table: str) -> tuple[str, dict[str, Any]]:
    item = _random_item(rng)
    choice = rng.random()
    if choice < 0.45:
        return "put_item", {"TableName": table, "Item": item}
    if choice < 0.65:
        return "update_item", {
            "TableName": table,
            "Key": _key(item),
            "UpdateExpression": rng.choice(
                ["SET g1pk = :g, g1sk = :s ADD n :one", "REMOVE g1sk", "SET g2pk = :y, g2sk = :one"]
            ),
            "ExpressionAttributeValues": {
                ":g": {"S": rng.choice(G1_VALUES)},
                ":s": {"S": "m" + str(rng.randrange(4))},
                ":one": {"N": "1"},
                ":y": {"S": rng.choice(G2_VALUES)},
            },
        }
    if choice < 0.75:
        return "delete_item", {"TableName": table, "Key": _key(item)}
    if choice < 0.87:
        requests = []
        keys = set()
        for _ in range(rng.randrange(1, 6)):
            other = _random_item(rng)
            key = (other["pk"]["S"], other["sk"]["S"])
            if key in keys:
                continue
            keys.add(key)
            if rng.random() < 0.7:
                requests.append({"PutRequest": {"Item": other}})
            else:
                requests.append({"DeleteRequest": {"Key": _key(other)}})
        return "batch_write_item", {"RequestItems": {table: requests}}
    # A transaction whose last condition fails about half the time, which cancels it all.
    other = _random_item(rng)
    while _key(other) == _key(item):
        other = _random_item(rng)
    return "transact_write_items", {
        "TransactItems": [
            {"Put": {"TableName": table, "Item": item}},
            {
                "Update": {
                    "TableName": table,
                    "Key": _key(other),
                    "UpdateExpression": "SET g1pk = :g, g1sk = :s",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": {":g": {"S": "c"}, ":s": {"S": "mm9"}},
                }
            },
        ]
    }


def _random_query(rng: random.Random, table: str) -> dict[str, Any]:
    index = rng.choice([None, "g1", "g2"])
    names = {None: ("pk", "sk"), "g1": ("g1pk", "g1sk"), "g2": ("g2pk", "g2sk")}[index]
    values = {None: HASH_VALUES, "g1": G1_VALUES, "g2": G2_VALUES}[index]
    params: dict[str, Any] = {"TableName": table}
    if index:
        params["IndexName"] = f"by-{index}"
    expression = "#h = :h"
    attribute_values: dict[str, Any] = {":h": {"S": rng.choice(values)}}
    kind = "N" if index == "g2" else "S"

    def value() -> dict[str, Any]:
        if kind == "N":
            return {"N": str(rng.choice([-10, 0, 2, 2.5, 3, 100, 200]))}
        return {"S": rng.choice(["", "a", "b1", "c", "m", "m1", "mm", "n", "z"])}

    comparison = rng.choice([None, "=", "<", "<=", ">", ">=", "between", "begins_with"])
    if comparison == "begins_with" and kind == "N":
        comparison = None
    if comparison == "between":
        low, high = sorted(
            [value(), value()], key=lambda v: float(v["N"]) if kind == "N" else v["S"]
        )
        expression += " AND #r BETWEEN :lo AND :hi"
        attribute_values.update({":lo": low, ":hi": high})
    elif comparison == "begins_with":
        expression += " AND begins_with(#r, :v)"
        attribute_values[":v"] = value()
    elif comparison is not None:
        expression += f" AND #r {comparison} :v"
        attribute_values[":v"] = value()
    if "" in [v.get("S") for v in attribute_values.values()]:
        # DynamoDB rejects empty key values; keep the key condition valid on both servers.
        attribute_values = {
            k: v if v.get("S") != "" else {"S": "a"} for k, v in attribute_values.items()
        }
    attribute_names = {"#h": names[0]}
    if comparison is not None:
        attribute_names["#r"] = names[1]
    params["KeyConditionExpression"] = expression
    if rng.random() < 0.5:
        params["Limit"] = rng.choice([1, 2, 3, 5, 10])
    params["ScanIndexForward"] = rng.random() < 0.5
    if rng.random() < 0.3:
        params["FilterExpression"] = "#n > :n"
        attribute_names["#n"] = "n"
        attribute_values[":n"] = {"N": str(rng.randrange(10))}
    if rng.random() < 0.2:
        params["ProjectionExpression"] = "pk, sk, #n"
        attribute_names["#n"] = "n"
    elif rng.random() < 0.1:
        params["Select"] = "COUNT"
    params["ExpressionAttributeNames"] = attribute_names
    params["ExpressionAttributeValues"] = attribute_values
    return params


def _call(client: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        response = dict(getattr(client, operation)(**params))
    except ClientError as exc:
        return {"error": exc.response["Error"]["Code"]}
    response.pop("ResponseMetadata", None)
    return response


def _pages(client: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    pages = []
    request = dict(params)
    for _ in range(60):
        page = _call(client, "query", request)
        pages.append(page)
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return pages


def test_patched_query_equals_stock(moto_server: MotoProcess, stock_endpoint: str) -> None:
    patched = boto3.client("dynamodb", endpoint_url=moto_server.endpoint_url)
    stock = boto3.client("dynamodb", endpoint_url=stock_endpoint)
    table = f"query-patch-{uuid.uuid4().hex[:8]}"
    for client in (patched, stock):
        _create_table(client, table)
    rng = random.Random(20261204)
    compared = 0
    for step in range(400):
        operation, params = _random_write(rng, table)
        assert _call(patched, operation, params) == _call(stock, operation, params), (
            step,
            operation,
        )
        if step % 2 == 0:
            query = _random_query(rng, table)
            expected = _pages(stock, query)
            assert _pages(patched, query) == expected, (step, query)
            compared += len(expected)
    assert compared > 200
