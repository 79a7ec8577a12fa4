"""The moto Query patch hands moto only the items of one partition's sort key range.

``tests/integration/test_moto_query_patch.py`` proves the results equal stock moto's; these
tests prove the patch does narrow, on a moto table in this process (the patch itself is not
installed here, only its functions are called).
"""

from __future__ import annotations

from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

from cirrus.local import moto_patches


def _table() -> Table:
    table = Table(
        "narrowing",
        account_id="123456789012",
        region="us-east-1",
        schema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        attr=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "gpk", "AttributeType": "S"},
            {"AttributeName": "gsk", "AttributeType": "S"},
        ],
        global_indexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [
                    {"AttributeName": "gpk", "KeyType": "HASH"},
                    {"AttributeName": "gsk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    for partition in range(20):
        for number in range(50):
            table.put_item(
                {
                    "pk": {"S": f"p{partition}"},
                    "sk": {"S": f"s{number:03d}"},
                    "gpk": {"S": f"g{number % 5}"},
                    "gsk": {"S": f"d{number // 10}"},
                }
            )
    return table


def _candidates(table: Table, **query: object) -> list[str]:
    arguments: dict[str, object] = {
        "hash_key": None,
        "range_comparison": None,
        "range_objs": [],
        "limit": None,
        "exclusive_start_key": None,
        "scan_index_forward": True,
        "index_name": None,
        "hash_key_conditions": None,
        "range_key_conditions": None,
        "filter_kwargs": {},
    }
    arguments.update(query)
    found = moto_patches._candidates(table, **arguments)  # type: ignore[arg-type]
    assert found is not None
    return [f"{item.hash_key.value}/{item.range_key.value}" for item in found]  # type: ignore[union-attr]


def test_base_range_and_limit() -> None:
    table = _table()
    found = _candidates(
        table,
        hash_key=DynamoType({"S": "p3"}),
        range_comparison="BETWEEN",
        range_objs=[DynamoType({"S": "s010"}), DynamoType({"S": "s019"})],
        limit=4,
    )
    # Four in range and the next item, which tells moto to return a LastEvaluatedKey.
    assert found == ["p3/s010", "p3/s011", "p3/s012", "p3/s013", "p3/s014"]


def test_base_reverse_after_start_key() -> None:
    table = _table()
    found = _candidates(
        table,
        hash_key=DynamoType({"S": "p3"}),
        range_comparison="BEGINS_WITH",
        range_objs=[DynamoType({"S": "s01"})],
        limit=2,
        scan_index_forward=False,
        exclusive_start_key={"pk": {"S": "p3"}, "sk": {"S": "s018"}},
    )
    assert sorted(found) == ["p3/s015", "p3/s016", "p3/s017"]


def test_index_partition_only() -> None:
    table = _table()
    value = DynamoType({"S": "d2"})
    found = _candidates(
        table,
        index_name="by-g",
        range_comparison="EQ",
        range_objs=[value],
        hash_key_conditions=[("gpk", DynamoType({"S": "g1"}))],
        range_key_conditions=[("gsk", "EQ", [value])],
        limit=3,
    )
    # Index entries sort by gsk, then by the table keys.
    assert found == ["p0/s021", "p0/s026", "p1/s021", "p1/s026"]


def test_legacy_query_filter_not_narrowed() -> None:
    table = _table()
    arguments = {"hash_key": DynamoType({"S": "p1"}), "filter_kwargs": {"gsk": {}}}
    assert (
        moto_patches._candidates(
            table,
            range_comparison=None,
            range_objs=[],
            limit=None,
            exclusive_start_key=None,
            scan_index_forward=True,
            index_name=None,
            hash_key_conditions=None,
            range_key_conditions=None,
            **arguments,  # type: ignore[arg-type]
        )
        is None
    )
