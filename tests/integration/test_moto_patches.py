"""The local stack's faster moto transactions keep DynamoDB's all-or-nothing outcome."""

from __future__ import annotations

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
