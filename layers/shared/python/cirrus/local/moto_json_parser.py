"""Request parameters of AWS's JSON protocol, parsed as moto's ``JSONParser`` parses them.

moto 5.2.5 parses a JSON-protocol request by walking the decoded body against the input shape
of the operation. For every value it looks up a handler method by the shape's type name, and
for every structure it reads each member's serialized name from the shape. This module builds,
once per shape, a function that does the same conversions: structure members under their
serialized names with null members left out, blobs base64-decoded, timestamps, integers and
floats converted, every other value kept. The functions raise where moto's parser raises,
for example on a list where the shape has a structure.

Functions are kept by shape name, which is unique within a service model, so recursive
shapes such as DynamoDB's ``AttributeValue`` compile once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from botocore.model import OperationModel, Shape
from moto.core.parse import default_blob_parser, default_timestamp_parser

Parse = Callable[[Any], Any]

_INTEGER_TYPES = frozenset({"integer", "byte", "short", "long"})
_FLOAT_TYPES = frozenset({"float", "double"})

_compile_lock = threading.Lock()
# The parse function of each shape by (service name, shape name).
_parsers: dict[tuple[str, str], Parse] = {}


def parse_json_request(operation_model: OperationModel, body: bytes) -> Any:
    """Return the parameters of a JSON-protocol request body, as ``JSONParser.parse`` does."""
    shape = operation_model.input_shape
    if shape is None:
        return {}
    return _parser_for(operation_model.service_model.service_name, shape)(_decode_body(body))


def _decode_body(body: bytes) -> Any:
    if not body:
        return {}
    try:
        text: str | bytes = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body
    try:
        return json.loads(text)
    except ValueError:
        # moto passes a body that is not JSON on as the message, for the action to reject.
        return {"message": text}


def _parser_for(service: str, shape: Shape) -> Parse:
    key = (service, shape.name)
    parser = _parsers.get(key)
    if parser is None:
        with _compile_lock:
            parser = _parsers.get(key)
            if parser is None:
                compiled: dict[str, Parse] = {}
                parser = _compile(shape, compiled)
                for name, function in compiled.items():
                    _parsers.setdefault((service, name), function)
    return parser


def _compile(shape: Shape, compiled: dict[str, Parse]) -> Parse:
    """Return the parse function of ``shape``, adding it and the ones it needs to ``compiled``."""
    known = compiled.get(shape.name)
    if known is not None:
        return known
    # A recursive shape reaches itself before its function exists, so it first gets a
    # function that calls the finished one.
    finished: list[Parse] = []

    def forward(value: Any) -> Any:
        return finished[0](value)

    compiled[shape.name] = forward
    function = _build(shape, compiled)
    finished.append(function)
    compiled[shape.name] = function
    return function


def _build(shape: Shape, compiled: dict[str, Parse]) -> Parse:
    type_name = shape.type_name
    if type_name == "structure":
        return _structure_parser(shape, compiled)
    if type_name == "list":
        return _list_parser(_compile(shape.member, compiled))
    if type_name == "map":
        key_parser = _compile(shape.key, compiled)
        return _map_parser(key_parser, _compile(shape.value, compiled))
    if type_name == "blob":
        return default_blob_parser
    if type_name == "timestamp":
        return default_timestamp_parser
    if type_name in _INTEGER_TYPES:
        return int
    if type_name in _FLOAT_TYPES:
        return float
    return _unchanged


def _unchanged(value: Any) -> Any:
    return value


def _structure_parser(shape: Shape, compiled: dict[str, Parse]) -> Parse:
    if getattr(shape, "is_document_type", False):
        return _unchanged
    members = [
        (name, member.serialization.get("name", name), _compile(member, compiled))
        for name, member in shape.members.items()
    ]

    def parse_structure(value: Any) -> Any:
        if value is None:
            return None
        parsed = {}
        for name, serialized_name, parse in members:
            raw = value.get(serialized_name)
            if raw is not None:
                parsed[name] = parse(raw)
        return parsed

    return parse_structure


def _list_parser(parse_member: Parse) -> Parse:
    def parse_list(value: Any) -> Any:
        return [parse_member(item) for item in value]

    return parse_list


def _map_parser(parse_key: Parse, parse_value: Parse) -> Parse:
    def parse_map(value: Any) -> Any:
        return {parse_key(key): parse_value(item) for key, item in value.items()}

    return parse_map
