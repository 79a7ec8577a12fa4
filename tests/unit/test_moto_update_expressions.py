"""moto's update expressions, parsed once per text and copied by pickle, as moto runs them.

``cirrus.local.moto_patches`` keeps the tree of each update expression text and hands moto's
validator an unpickled copy of it in place of a deep copy. The tests compare the kept trees and
their copies with moto's own parse, and run updates through an in-process DynamoDB backend
with and without the two replacements.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.parsing import validators
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

from cirrus.local.moto_patches import copy_update_expression, parse_update_expression

EXPRESSIONS = [
    "ADD #c :one SET #v = :v",
    "SET #v = :v, #l = list_append(#l, :items), #n = if_not_exists(#n, :zero) + :one",
    "SET #m.#k[1] = :v REMOVE #l[0], #l[2] DELETE #s :old",
    "REMOVE #gone SET #c = #c - :one",
]
NAMES = {
    "#c": "count",
    "#v": "version",
    "#l": "list",
    "#n": "number",
    "#m": "map",
    "#k": "key",
    "#s": "set",
    "#gone": "gone",
}
VALUES = {
    ":one": {"N": "1"},
    ":zero": {"N": "0"},
    ":v": {"S": "v2"},
    ":items": {"L": [{"S": "c"}]},
    ":old": {"SS": ["a"]},
}
KEY = {"pk": {"S": "p"}, "sk": {"S": "s"}}
ITEM = {
    **KEY,
    "count": {"N": "5"},
    "list": {"L": [{"S": "a"}, {"S": "b"}, {"S": "x"}]},
    "map": {"M": {"key": {"L": [{"N": "1"}, {"N": "2"}]}}},
    "set": {"SS": ["a", "b"]},
    "gone": {"S": "g"},
}


def _shape(node: Any) -> Any:
    """Return the tree as nested tuples of class names and attribute values, parents left out."""
    if isinstance(node, list):
        return [_shape(child) for child in node]
    if not hasattr(node, "__dict__"):
        return node
    attributes = {name: value for name, value in vars(node).items() if name != "parent"}
    return (type(node).__name__, {name: _shape(value) for name, value in attributes.items()})


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_kept_tree_matches_moto(text: str) -> None:
    expected = _shape(UpdateExpressionParser.make(text))

    kept = parse_update_expression(text)
    copied = copy_update_expression(kept)

    assert parse_update_expression(text) is kept
    assert copied is not kept
    assert _shape(kept) == expected
    assert _shape(copied) == expected
    assert _shape(copied) == _shape(copy.deepcopy(kept))


def test_copy_of_other_value_deep() -> None:
    value = {"list": [1, 2]}

    copied = copy_update_expression(value)

    assert copied == value
    assert copied["list"] is not value["list"]


def _update_all(backend: DynamoDBBackend) -> list[Any]:
    results = []
    for text in EXPRESSIONS:
        backend.put_item("t", copy.deepcopy(ITEM))
        used_names = {name: NAMES[name] for name in NAMES if name in text}
        used_values = {name: VALUES[name] for name in VALUES if name in text}
        try:
            item = backend.update_item("t", KEY, text, used_names, used_values)
            results.append(item.to_json())
        except MockValidationException as error:
            results.append(str(error))
    return results


def _backend() -> DynamoDBBackend:
    backend = DynamoDBBackend("us-east-1", "123456789012")
    backend.create_table(
        "t",
        schema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        throughput=None,
        attr=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        global_indexes=None,
        indexes=None,
        streams=None,
        billing_mode="PAY_PER_REQUEST",
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=False,
        warm_throughput=None,
    )
    return backend


def test_updates_same_with_kept_trees(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _update_all(_backend())
    monkeypatch.setattr(UpdateExpressionParser, "make", staticmethod(parse_update_expression))
    monkeypatch.setattr(validators, "deepcopy", copy_update_expression)

    first = _update_all(_backend())
    second = _update_all(_backend())

    assert first == expected
    assert second == expected
