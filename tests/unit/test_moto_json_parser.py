"""JSON-protocol parameters parsed by the front's parser and by moto's own ``JSONParser``.

For every operation of DynamoDB, SQS and EventBridge, the tests build request bodies from the
operation's input shape, with every member nested to a few levels and nulls and unknown keys
mixed in. The two parsers must return the same parameters or raise the same exception.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.model import Shape
from moto.core.parse import JSONParser
from moto.core.utils import get_service_model

from cirrus.local.moto_json_parser import parse_json_request

SERVICES = ("dynamodb", "sqs", "events")
MAX_DEPTH = 4


def _sample(shape: Shape, depth: int, variant: int) -> Any:
    """Return a JSON value for ``shape``, with nulls and unknown keys chosen by ``variant``."""
    type_name = shape.type_name
    if type_name == "structure":
        if depth >= MAX_DEPTH:
            return {}
        value: dict[str, Any] = {"UnknownMember": "ignored"} if variant % 2 else {}
        for number, (name, member) in enumerate(shape.members.items()):
            key = member.serialization.get("name", name)
            if (number + variant) % 5 == 0:
                value[key] = None
            else:
                value[key] = _sample(member, depth + 1, variant)
        return value
    if type_name == "list":
        if depth >= MAX_DEPTH:
            return []
        return [_sample(shape.member, depth + 1, variant) for _ in range(2)]
    if type_name == "map":
        if depth >= MAX_DEPTH:
            return {}
        return {f"k{variant}": _sample(shape.value, depth + 1, variant)}
    samples = {
        "blob": base64.b64encode(b"\x00\xffblob").decode(),
        "timestamp": 1765000000 + variant,
        "integer": "7",
        "long": 8,
        "double": "2.5",
        "float": 3,
        "boolean": variant % 2 == 0,
        "string": "Müller",
    }
    return samples.get(type_name, "value")


def _operations() -> list[tuple[str, str]]:
    operations = []
    for service in SERVICES:
        model = get_service_model(service)
        operations += [(service, name) for name in model.operation_names]
    return operations


def _parse_both(service: str, operation: str, body: bytes) -> tuple[Any, Any]:
    operation_model = get_service_model(service).operation_model(operation)
    results = []
    for parse in (
        lambda: JSONParser(operation_model, map_type=dict).parse({"body": body}),
        lambda: parse_json_request(operation_model, body),
    ):
        try:
            results.append(("returned", parse()))
        except Exception as error:  # the two parsers must raise alike
            results.append(("raised", type(error)))
    return results[0], results[1]


@pytest.mark.parametrize(("service", "operation"), _operations())
def test_operation_parsed_like_moto(service: str, operation: str) -> None:
    input_shape = get_service_model(service).operation_model(operation).input_shape
    for variant in range(3):
        value = _sample(input_shape, 0, variant) if input_shape is not None else {}
        body = json.dumps(value).encode()

        expected, parsed = _parse_both(service, operation, body)

        assert parsed == expected, f"variant {variant}"


ODD_BODIES = [
    b"",
    b"{}",
    b"not json",
    b"[1, 2]",
    b'{"TableName": ["not", "a", "string"]}',
    b'{"Item": "not a map"}',
    b'{"Item": {"a": ["not a structure"]}}',
    b'{"Item": {"a": {"N": "1", "S": null}}, "ReturnValues": null}',
    b'{"Item": {"a": {"B": "not base64!"}}}',
    b'{"Item": {"a": {"L": "abc"}}}',
]


@pytest.mark.parametrize("body", ODD_BODIES)
def test_odd_body_parsed_like_moto(body: bytes) -> None:
    expected, parsed = _parse_both("dynamodb", "PutItem", body)

    assert parsed == expected
