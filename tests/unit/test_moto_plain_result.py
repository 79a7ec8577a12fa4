"""DynamoDB results expanded by the local stack's patch and by moto's ``dynamo_to_dict``."""

from __future__ import annotations

import base64
import datetime

import pytest
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.utilities import dynamo_to_dict

from cirrus.local.moto_patches import plain_result

ATTRIBUTES = {
    "pk": {"S": "p"},
    "sk": {"S": "s"},
    "name": {"S": "Müller"},
    "count": {"N": "3"},
    "raw": {"B": base64.b64encode(b"\x00\xff").decode()},
    "blobs": {"BS": [base64.b64encode(b"\x01").decode(), base64.b64encode(b"\x02").decode()]},
    "tags": {"SS": ["a", "b"]},
    "sizes": {"NS": ["1", "2.5"]},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "nested": {
        "M": {
            "list": {"L": [{"S": "x"}, {"B": base64.b64encode(b"\x03").decode()}]},
            "map": {"M": {"deep": {"N": "1"}}},
        }
    },
}


def _item() -> Item:
    return Item(DynamoType({"S": "p"}), DynamoType({"S": "s"}), ATTRIBUTES)


RESULTS = [
    {"Item": _item().to_json()["Attributes"]},
    {"Items": [_item().attrs, _item().attrs], "Count": 2, "ScannedCount": 2},
    {"Attributes": {"raw": DynamoType({"B": b"\x00raw bytes"})}},
    {"Responses": {"t": [_item().to_json()["Attributes"]]}, "UnprocessedKeys": {}},
    {"Item": _item()},
    {"When": datetime.datetime(2026, 12, 6, 6, 0, 0)},
    {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}},
    ["a", 1, None, True],
    "plain",
    None,
]


@pytest.mark.parametrize("result", RESULTS)
def test_result_expanded_like_moto(result: object) -> None:
    assert plain_result(result) == dynamo_to_dict(result)


def test_item_attributes_expanded_like_moto() -> None:
    attributes = {name: DynamoType(value) for name, value in ATTRIBUTES.items()}

    expanded = plain_result(attributes)

    assert expanded == dynamo_to_dict(attributes)
    assert expanded["raw"] == {"B": b"\x00\xff"}
    assert expanded["blobs"] == {"BS": [b"\x01", b"\x02"]}
