"""The local stack's faster moto keeps DynamoDB's behaviour.

Transactions stay all-or-nothing, responses keep every type, item sizes keep their limit, and
conditions of the same text are checked against their own names and values.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError

from cirrus.local.moto_process import MotoProcess


@pytest.fixture
def table(moto_server: MotoProcess) -> tuple[object, str]:
    client = boto3.client("dynamodb", endpoint_url=moto_server.endpoint_url)
    name = "patch-test"
    # list_tables returns 100 names a page and the session's server holds more tables.
    try:
        client.describe_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    client.put_item(TableName=name, Item={"pk": {"S": "existing"}, "n": {"N": "1"}})
    client.delete_item(TableName=name, Key={"pk": {"S": "new"}})
    return client, name


def test_cancelled_transaction_changes_nothing(table: tuple[object, str]) -> None:
    client, name = table
    with pytest.raises(ClientError) as info:
        client.transact_write_items(  # type: ignore[attr-defined]
            TransactItems=[
                {"Put": {"TableName": name, "Item": {"pk": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": name,
                        "Key": {"pk": {"S": "existing"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {
                    "Put": {
                        "TableName": name,
                        "Item": {"pk": {"S": "existing-too"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    assert info.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert "Item" not in client.get_item(TableName=name, Key={"pk": {"S": "new"}})  # type: ignore[attr-defined]
    existing = client.get_item(TableName=name, Key={"pk": {"S": "existing"}})["Item"]  # type: ignore[attr-defined]
    assert existing["n"] == {"N": "1"}


def test_successful_transaction_applies_all(table: tuple[object, str]) -> None:
    client, name = table
    client.transact_write_items(  # type: ignore[attr-defined]
        TransactItems=[
            {"Put": {"TableName": name, "Item": {"pk": {"S": "new"}}}},
            {
                "Update": {
                    "TableName": name,
                    "Key": {"pk": {"S": "existing"}},
                    "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
        ]
    )
    assert "Item" in client.get_item(TableName=name, Key={"pk": {"S": "new"}})  # type: ignore[attr-defined]
    existing = client.get_item(TableName=name, Key={"pk": {"S": "existing"}})["Item"]  # type: ignore[attr-defined]
    assert existing["n"] == {"N": "2"}


def test_concurrent_transactions_lose_no_update(table: tuple[object, str]) -> None:
    """Cancelled transactions racing successful ones leave exactly the successful increments.

    A cancelled transaction writes its first item before it fails on its condition and rolls
    back. Without isolation between requests, that rollback can erase another thread's
    increment of the same item.
    """
    client, name = table
    increment = {
        "Update": {
            "TableName": name,
            "Key": {"pk": {"S": "existing"}},
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    doomed = {
        "Put": {
            "TableName": name,
            "Item": {"pk": {"S": "existing-too"}},
            "ConditionExpression": "attribute_exists(pk)",
        }
    }
    # Filler puts widen the window between the increment and the rollback.
    filler = [
        {
            "Put": {
                "TableName": name,
                "Item": {"pk": {"S": f"filler-{i}"}, "data": {"S": "x" * 2000}},
            }
        }
        for i in range(60)
    ]
    rounds = 300

    def succeed(_: int) -> None:
        client.transact_write_items(TransactItems=[increment])  # type: ignore[attr-defined]

    def cancel(_: int) -> None:
        with pytest.raises(ClientError):
            client.transact_write_items(TransactItems=[increment, *filler, doomed])  # type: ignore[attr-defined]

    with ThreadPoolExecutor(max_workers=12) as pool:
        work = [pool.submit(task, i) for i in range(rounds) for task in (succeed, cancel)]
        for future in work:
            future.result()
    existing = client.get_item(TableName=name, Key={"pk": {"S": "existing"}})["Item"]  # type: ignore[attr-defined]
    assert existing["n"] == {"N": str(1 + rounds)}


# Every attribute type, binary ones nested too, which moto's responses carry base64-encoded.
EVERY_TYPE = {
    "pk": {"S": "typed"},
    "blob": {"B": b"\x00\xffbinary"},
    "blobs": {"BS": [b"\x01", b"\x02\x03"]},
    "number": {"N": "12.5"},
    "numbers": {"NS": ["1", "2"]},
    "texts": {"SS": ["a", "b"]},
    "flag": {"BOOL": True},
    "nothing": {"NULL": True},
    "nested": {"M": {"inner": {"B": b"\x7f"}, "list": {"L": [{"S": "x"}, {"B": b"\x10"}]}}},
}


def _sets_sorted(item: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Return ``item`` with its set values in order: DynamoDB keeps no order in a set."""
    return {
        name: {kind: sorted(value) if kind in ("BS", "NS", "SS") else value}  # type: ignore[type-var]
        for name, attribute in item.items()
        for kind, value in attribute.items()
    }


def test_item_responses_keep_every_type(table: tuple[object, str]) -> None:
    client, name = table
    key = {"pk": {"S": "typed"}}
    client.put_item(TableName=name, Item=EVERY_TYPE)  # type: ignore[attr-defined]

    got = client.get_item(TableName=name, Key=key)["Item"]  # type: ignore[attr-defined]
    queried = client.query(  # type: ignore[attr-defined]
        TableName=name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "typed"}},
    )
    batch = client.batch_get_item(RequestItems={name: {"Keys": [key]}})  # type: ignore[attr-defined]
    old = client.put_item(TableName=name, Item=EVERY_TYPE, ReturnValues="ALL_OLD")  # type: ignore[attr-defined]
    deleted = client.delete_item(TableName=name, Key=key, ReturnValues="ALL_OLD")  # type: ignore[attr-defined]

    expected = _sets_sorted(EVERY_TYPE)
    assert _sets_sorted(got) == expected
    assert queried["Count"] == 1
    assert _sets_sorted(queried["Items"][0]) == expected
    assert _sets_sorted(batch["Responses"][name][0]) == expected
    assert batch["UnprocessedKeys"] == {}
    assert _sets_sorted(old["Attributes"]) == expected
    assert _sets_sorted(deleted["Attributes"]) == expected
    assert "Item" not in client.get_item(TableName=name, Key=key)  # type: ignore[attr-defined]


def test_item_size_limit_kept(table: tuple[object, str]) -> None:
    client, name = table
    fits = {"pk": {"S": "large"}, "a": {"S": "x" * 200_000}, "b": {"S": "y" * 200_000}}
    too_large = {**fits, "c": {"S": "z" * 10_000}}

    client.put_item(TableName=name, Item=fits)  # type: ignore[attr-defined]
    with pytest.raises(ClientError) as info:
        client.put_item(TableName=name, Item=too_large)  # type: ignore[attr-defined]

    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "size" in info.value.response["Error"]["Message"]
    stored = client.get_item(TableName=name, Key={"pk": {"S": "large"}})["Item"]  # type: ignore[attr-defined]
    assert set(stored) == {"pk", "a", "b"}


def test_same_condition_text_new_values(table: tuple[object, str]) -> None:
    # The second and third writes send the text of the first with other names and values,
    # so each must be checked against its own.
    client, name = table

    def put_owner(owner: str, field: str, expected: str) -> None:
        client.put_item(  # type: ignore[attr-defined]
            TableName=name,
            Item={"pk": {"S": "new"}, "owner": {"S": owner}},
            ConditionExpression="attribute_not_exists(pk) OR #field = :expected",
            ExpressionAttributeNames={"#field": field},
            ExpressionAttributeValues={":expected": {"S": expected}},
        )

    put_owner("a", "owner", "a")
    with pytest.raises(ClientError) as info:
        put_owner("b", "owner", "b")
    put_owner("c", "pk", "new")
    stored = client.get_item(TableName=name, Key={"pk": {"S": "new"}})["Item"]  # type: ignore[attr-defined]

    assert info.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert stored["owner"] == {"S": "c"}
