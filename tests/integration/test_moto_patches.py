"""The local stack's faster moto transactions keep DynamoDB's all-or-nothing outcome."""

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
