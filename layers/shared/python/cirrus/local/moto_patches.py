"""Faster DynamoDB transactions and Queries for the local stack's moto server (moto 5.2.5).

Transactions: moto's ``transact_write_items`` deep-copies every table a transaction names,
before each of its items, so that it can roll back. Ingest writes one transaction per
instance, so the cost grows with the index: about 8 instances per second at a few hundred,
less beyond (measured with ``bench/cstore.py``). This patch snapshots only the items a
transaction touches and restores them when it is cancelled, which is the same outcome for the
caller.

Queries: moto's ``Table.query`` reads and sorts every item of the table for each Query, on the
table and on every index alike. This patch keeps, for each table, every partition of the table
and of each global secondary index in sorted containers, updated after each write (put,
update and delete of an item, which batch writes, transactions, PartiQL and the rollback above
all go through). A Query then bisects its partition to the sort key range and hands moto's own
``query`` only the items it can return, plus the item after them, so that limits, pages,
filters and projections behave as before. Queries this patch does not narrow (local
secondary indexes, indexes with several key attributes, legacy ``QueryFilter``) run unchanged.

Isolation: moto's server handles each request on its own thread, and moto's DynamoDB does
not isolate one request from another. Two transactions on one item could interleave, and the
rollback above could restore an item that another request had changed in the meantime (a
lost counter increment, seen with four ingest threads). DynamoDB serializes a transaction
against every other write and read of its items. This patch runs DynamoDB requests one at a
time, which gives the same outcome at little cost, because the interpreter lock already lets
only one request run Python code at a time.

Responses: moto serializes each result by walking it against the operation's output shape
in botocore's service model, which took about two thirds of moto's time for a PutItem or a
Query of the index. The results of the item operations below are already in DynamoDB's wire
form once moto's ``DynamoResult`` has expanded its types. So this patch writes them as JSON
directly and leaves out the keys that the output shape lacks, as the serializer does. Binary
values, which that expansion leaves as bytes, are written base64-encoded, as the serializer
writes them. Other operations, such as DescribeTable with its timestamps, and errors keep
moto's serializer.

New items: moto checks an item's size as each attribute is added, summing every attribute
added so far each time, so building an item of n attributes costs n squared size sums (a
seventh of a PutItem of a 30-attribute index record). This patch sums once, for the same
limit and the same error.

Conditions: moto lexes each condition expression anew, compiling its patterns for every
token. This patch keeps the tokens of each expression text. moto's parser builds new nodes
from the tokens without changing them, and it looks up the names and values that an
expression refers to after lexing, so two requests with the same text and different values
each get their own result. Together with the list of response methods that
``cirrus.local.moto_server_patches`` keeps, a conditional PutItem through moto's in-process
mock took 2.18 CPU ms (client included) against 2.41 ms.

Results in wire form: before it writes a result, moto expands its ``DynamoType`` values into
``{type: value}`` dicts with ``utilities.dynamo_to_dict``, which imports ``DynamoType``
inside the function, once per value of the result. This patch does the same expansion with
the class imported once: 0.10 ms against 0.64 ms for the result of a Query of 10 items of 30
attributes.

Update expressions: moto parses the text of an update expression twice per UpdateItem (once
to list the names and values it uses, once to run it) and once more per Update of a
transaction, and its validator then deep-copies the tree before it fills in the values. This
patch parses each text once and keeps the tree with a pickled copy of it. The validator gets a
new tree unpickled from that copy, which is the same tree as its deep copy: for
``ADD #c :one SET #v = :v``, 22 µs against 168 µs for ``copy.deepcopy`` and 113 µs for a
parse. moto's parser and ``find_clauses`` only read a tree, and the validator changes only
its own copy, so the kept trees never change.

Applied only in the moto child process that ``cirrus.local.moto_process`` starts.
"""

from __future__ import annotations

import base64
import copy
import datetime
import inspect
import json
import pickle
import threading
import types
from collections import deque
from collections.abc import Callable
from typing import Any

from moto.dynamodb import models, responses
from moto.dynamodb.comparisons import ConditionExpressionParser
from moto.dynamodb.exceptions import (
    ItemSizeTooLarge,
    MockValidationException,
    MultipleTransactionsException,
    TransactionCanceledException,
)
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, Table
from moto.dynamodb.models.utilities import bytesize
from moto.dynamodb.parsing import validators
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]
from moto.dynamodb.responses import DynamoResult
from sortedcontainers import SortedKeyList

_original = models.DynamoDBBackend.transact_write_items


def _copy_unless_table(value: Any, memo: Any = None) -> Any:
    """Stand in for ``copy.deepcopy`` in moto's module: tables are not copied."""
    return value if isinstance(value, Table) else copy.deepcopy(value, memo)


def _key_of(backend: Any, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    snapshots = []
    for entry in transact_items:
        op_type, op = next(iter(entry.items()))
        if op_type in {"Put", "Delete", "Update"}:
            key = _key_of(self, op_type, op)
            current = self.get_item(op["TableName"], key)
            saved = copy.deepcopy(current.to_json()["Attributes"]) if current else None
            snapshots.append((op["TableName"], key, saved))
    try:
        _original(self, transact_items)
    except (TransactionCanceledException, MultipleTransactionsException, MockValidationException):
        for table_name, key, saved in reversed(snapshots):
            if saved is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, saved)
        raise


# Query


# An entry of a base table partition is a sort key value. An entry of an index partition is
# (index sort key, 1, table hash key, table sort key), which sorts as moto sorts: by the index
# sort key, then by the table's keys. Because of the middle 1, a search key (value, 0) falls
# before every entry with that index sort key and (value, 2) after them.
_Entry = Any
_Key = tuple[Any, ...]


def _plain(value: DynamoType | None) -> Any:
    return None if value is None else value.cast_value


def _entry_key(entry: _Entry) -> _Key:
    if isinstance(entry, DynamoType):
        return (entry.cast_value,)
    return (entry[0].cast_value, 1, _plain(entry[2]), _plain(entry[3]))


class _GsiPartitions:
    """The partitions of one global secondary index with one hash and one range attribute."""

    def __init__(self, hash_attr: str, range_attr: str) -> None:
        self.hash_attr = hash_attr
        self.range_attr = range_attr
        self.partitions: dict[DynamoType, SortedKeyList] = {}


class _TablePartitions:
    """Sorted partitions of a table and of its global secondary indexes."""

    def __init__(self, table: Table) -> None:
        self.lock = threading.RLock()
        self.signature = _signature(table)
        self.base: dict[DynamoType, SortedKeyList] = {}
        self.indexes: dict[str, _GsiPartitions] = {}
        for index in table.global_indexes:
            hash_keys = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
            range_keys = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
            if len(hash_keys) == 1 and len(range_keys) == 1:
                self.indexes[index.name] = _GsiPartitions(hash_keys[0], range_keys[0])
        # The index entries of each item, by its table keys, so that a write can remove them.
        self.entries_of: dict[tuple[DynamoType, DynamoType | None], list[tuple[Any, Any]]] = {}
        for item in table.all_items():
            self.add(table, item)

    def __deepcopy__(self, memo: Any) -> None:
        # A copied table (a backup) builds its own partitions when it is first queried.
        return None

    def add(self, table: Table, item: Item) -> None:
        if table.range_key_attr is None:
            return
        key = (item.hash_key, item.range_key)
        added: list[tuple[Any, Any]] = []
        partition = self.base.setdefault(item.hash_key, SortedKeyList(key=_entry_key))
        partition.add(item.range_key)
        added.append((partition, item.range_key))
        for gsi in self.indexes.values():
            hash_value = item.attrs.get(gsi.hash_attr)
            range_value = item.attrs.get(gsi.range_attr)
            if hash_value is None or range_value is None:
                continue
            entry = (range_value, 1, item.hash_key, item.range_key)
            gsi_partition = gsi.partitions.setdefault(hash_value, SortedKeyList(key=_entry_key))
            gsi_partition.add(entry)
            added.append((gsi_partition, entry))
        self.entries_of[key] = added

    def remove(self, hash_key: DynamoType, range_key: DynamoType | None) -> None:
        for partition, entry in self.entries_of.pop((hash_key, range_key), []):
            partition.remove(entry)

    def refresh(self, table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> None:
        """Bring the entries of one item in line with the table after a write to it."""
        with self.lock:
            self.remove(hash_key, range_key)
            item = _stored_item(table, hash_key, range_key)
            if item is not None:
                self.add(table, item)


def _signature(table: Table) -> tuple[Any, ...]:
    indexes = tuple((index.name, repr(index.schema)) for index in table.global_indexes)
    return (table.hash_key_attr, table.range_key_attr, indexes)


def _stored_item(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Item | None:
    partition = table.items.get(hash_key)
    if partition is None:
        return None
    if table.range_key_attr is None:
        return partition  # type: ignore[return-value]
    found: Item | None = partition.get(range_key)
    return found


_PARTITIONS_ATTRIBUTE = "_cirrus_partitions"


def _partitions(table: Table) -> _TablePartitions:
    current: _TablePartitions | None = getattr(table, _PARTITIONS_ATTRIBUTE, None)
    if current is None or current.signature != _signature(table):
        current = _TablePartitions(table)
        setattr(table, _PARTITIONS_ATTRIBUTE, current)
    return current


def _refresh(table: Table, hash_key: DynamoType | None, range_key: DynamoType | None) -> None:
    current: _TablePartitions | None = getattr(table, _PARTITIONS_ATTRIBUTE, None)
    if current is not None and hash_key is not None:
        current.refresh(table, hash_key, range_key)


def _range_bounds(
    entries: SortedKeyList, comparison: str | None, values: list[DynamoType], gsi: bool
) -> tuple[int, int] | None:
    """Return the positions of the entries a sort key condition keeps, or None if unknown."""

    def before(value: DynamoType) -> int:
        return int(entries.bisect_key_left((value.cast_value, 0) if gsi else (value.cast_value,)))

    def after(value: DynamoType) -> int:
        return int(entries.bisect_key_right((value.cast_value, 2) if gsi else (value.cast_value,)))

    count = len(entries)
    if comparison is None:
        return 0, count
    bounds: dict[str, Callable[[], tuple[int, int]]] = {
        "EQ": lambda: (before(values[0]), after(values[0])),
        "LT": lambda: (0, before(values[0])),
        "LE": lambda: (0, after(values[0])),
        "GT": lambda: (after(values[0]), count),
        "GE": lambda: (before(values[0]), count),
        "BETWEEN": lambda: (before(values[0]), after(values[1])),
    }
    if comparison in bounds:
        return bounds[comparison]()
    if comparison == "BEGINS_WITH" and values[0].type == "S":
        prefix = str(values[0].value)
        low = before(values[0])
        if not prefix:
            return low, count
        # Every string that starts with the prefix sorts below the prefix with its last
        # character incremented.
        successor = prefix[:-1] + chr(ord(prefix[-1]) + 1) if ord(prefix[-1]) < 0x10FFFF else None
        if successor is None:
            return None
        return low, before(DynamoType({"S": successor}))
    return None


def _start_key(
    table: Table, exclusive_start_key: dict[str, Any] | None, range_attr: str | None
) -> _Entry | bool | None:
    """Return the entry form of an ExclusiveStartKey; None without one, False if incomplete."""
    if not exclusive_start_key:
        return None
    try:
        hash_key = DynamoType(exclusive_start_key[table.hash_key_attr])
        range_key = DynamoType(exclusive_start_key[table.range_key_attr])  # type: ignore[index]
        if range_attr is None:
            return range_key
        return (DynamoType(exclusive_start_key[range_attr]), 1, hash_key, range_key)
    except KeyError:
        return False


_narrowed = threading.local()
_original_query = Table.query
_QUERY_SIGNATURE = inspect.signature(_original_query)
_original_all_items = Table.all_items
_original_put = Table.put_item
_original_delete = Table.delete_item
_original_update = models.DynamoDBBackend.update_item


def _candidates(
    table: Table,
    hash_key: DynamoType | None,
    range_comparison: str | None,
    range_objs: list[DynamoType],
    limit: int | None,
    exclusive_start_key: dict[str, Any] | None,
    scan_index_forward: bool,
    index_name: str | None,
    hash_key_conditions: list[tuple[str, DynamoType]] | None,
    range_key_conditions: list[tuple[str, str, list[DynamoType]]] | None,
    filter_kwargs: dict[str, Any],
) -> list[Item] | None:
    """Return the items a Query can return, or None when moto must look at every item."""
    if filter_kwargs or table.range_key_attr is None or (limit is not None and limit < 1):
        return None
    partitions = _partitions(table)
    forward = scan_index_forward is not False
    if index_name is None:
        if hash_key is None:
            return None
        entries = partitions.base.get(hash_key)
        if entries is None:
            return []
        bounds = _range_bounds(entries, range_comparison, range_objs, gsi=False)
        start = _start_key(table, exclusive_start_key, None)
        if bounds is None or start is False:
            return None
        partition = table.items[hash_key]
        return _narrowed_items(
            entries, bounds, start, limit, forward, lambda entry: partition[entry]
        )
    gsi = partitions.indexes.get(index_name)
    conditions = hash_key_conditions or []
    ranges = range_key_conditions or []
    if gsi is None or len(conditions) != 1 or len(ranges) > 1:
        return None
    if conditions[0][0] != gsi.hash_attr or (ranges and ranges[0][0] != gsi.range_attr):
        return None
    entries = gsi.partitions.get(conditions[0][1])
    if entries is None:
        return []
    bounds = _range_bounds(entries, range_comparison, range_objs, gsi=True)
    start = _start_key(table, exclusive_start_key, gsi.range_attr)
    if bounds is None or start is False:
        return None
    return _narrowed_items(
        entries, bounds, start, limit, forward, lambda entry: _index_item(table, entry)
    )


def _index_item(table: Table, entry: _Entry) -> Item:
    item = _stored_item(table, entry[2], entry[3])
    if item is None:
        raise KeyError(f"index entry without a stored item in table {table.name}")
    return item


def _narrowed_items(
    entries: SortedKeyList,
    bounds: tuple[int, int],
    start: _Entry | None,
    limit: int | None,
    forward: bool,
    item_at: Callable[[_Entry], Item],
) -> list[Item]:
    """Return the items moto's query loop can reach, in partition order.

    These are the items in ``bounds`` after the start key, at most ``limit`` of them. The
    entry next to them in the direction of the Query comes too, because moto's loop looks at
    one more item to decide whether to return a LastEvaluatedKey.
    """
    low, high = bounds
    count = len(entries)
    if forward:
        if start is not None:
            low = max(low, int(entries.bisect_key_right(_entry_key(start))))
        end = high if limit is None else min(high, low + limit)
        positions, tail = range(low, min(end + 1, count)), range(low, count)
    else:
        if start is not None:
            high = min(high, int(entries.bisect_key_left(_entry_key(start))))
        first = low if limit is None else max(low, high - limit)
        positions, tail = range(max(first - 1, 0), high), range(0, high)
    items = [item_at(entries[position]) for position in positions]
    # moto's loop also stops at the first item, in range or not, that would take the page over
    # its size limit. Only a page already near that limit can meet such an item later on.
    if sum(item.size() for item in items) > RESULT_SIZE_LIMIT // 2:
        items = [item_at(entries[position]) for position in tail]
    return items


def _query(self: Table, *args: Any, **kwargs: Any) -> tuple[list[Item], int, dict[str, Any] | None]:
    """Run moto's Query on the narrowed candidates of its partition, when they are known."""
    arguments = _QUERY_SIGNATURE.bind(self, *args, **kwargs)
    arguments.apply_defaults()
    named = arguments.arguments
    partitions = _partitions(self)
    with partitions.lock:
        candidates = _candidates(
            self,
            named["hash_key"],
            named["range_comparison"],
            named["range_objs"],
            named["limit"],
            named["exclusive_start_key"],
            named["scan_index_forward"],
            named["index_name"],
            named["hash_key_conditions"],
            named["range_key_conditions"],
            named["filter_kwargs"],
        )
        narrowed: dict[int, list[Item]] = getattr(_narrowed, "tables", {})
        _narrowed.tables = narrowed
        if candidates is not None:
            narrowed[id(self)] = candidates
        try:
            return _original_query(self, *args, **kwargs)
        finally:
            narrowed.pop(id(self), None)


def _all_items(self: Table) -> list[Item]:
    """Return the narrowed candidates inside a patched Query, else every item as moto does."""
    candidates = getattr(_narrowed, "tables", {}).get(id(self))
    if candidates is not None:
        return list(candidates)
    return _original_all_items(self)


def _refresh_attributes(table: Table, attributes: dict[str, Any]) -> None:
    """Refresh the entries of the item whose table keys are in ``attributes`` (wire form)."""
    hash_value = attributes.get(table.hash_key_attr)
    range_value = attributes.get(table.range_key_attr) if table.range_key_attr else None
    if hash_value is not None:
        range_key = DynamoType(range_value) if range_value is not None else None
        _refresh(table, DynamoType(hash_value), range_key)


def _put_item(self: Table, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Item:
    try:
        return _original_put(self, item_attrs, *args, **kwargs)
    finally:
        _refresh_attributes(self, item_attrs)


def _delete_item(self: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Item | None:
    try:
        return _original_delete(self, hash_key, range_key)
    finally:
        _refresh(self, hash_key, range_key)


def _update_item(
    self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any
) -> Item:
    # moto changes the stored item in place, so its index entries are refreshed afterwards,
    # also when the update failed part way.
    try:
        return _original_update(self, table_name, key, *args, **kwargs)
    finally:
        _refresh_attributes(self.get_table(table_name), key)


def _install_query_patch() -> None:
    Table.query = _query  # type: ignore[method-assign]
    Table.all_items = _all_items  # type: ignore[method-assign]
    Table.put_item = _put_item  # type: ignore[method-assign]
    Table.delete_item = _delete_item  # type: ignore[method-assign]
    models.DynamoDBBackend.update_item = _update_item  # type: ignore[method-assign]


_requests_lock = threading.Lock()
_original_call_action = responses.DynamoHandler.call_action


def _serialized_call_action(self: Any) -> Any:
    with _requests_lock:
        return _original_call_action(self)


# The operations whose results hold only item data, keys, counts and consumed capacity.
_ITEM_OPERATIONS = frozenset(
    {
        "BatchGetItem",
        "BatchWriteItem",
        "DeleteItem",
        "GetItem",
        "PutItem",
        "Query",
        "Scan",
        "TransactGetItems",
        "TransactWriteItems",
        "UpdateItem",
    }
)
_original_execute_result = DynamoResult.execute_result


def _base64(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _execute_result(self: DynamoResult, context: Any) -> Any:
    result = self.result
    if context.operation_model.name not in _ITEM_OPERATIONS or not isinstance(result, dict):
        return _original_execute_result(self, context)
    members = context.operation_model.output_shape.members
    result = {key: value for key, value in result.items() if key in members}
    body = json.dumps(result, separators=(",", ":"), default=_base64)
    return 200, {"Content-Type": "application/x-amz-json-1.0"}, body


# moto's item size limit, between DynamoDB's documented 400 KB and what DynamoDB accepts.
_ITEM_SIZE_LIMIT = 405000


def _item_init(
    self: Item, hash_key: DynamoType, range_key: DynamoType | None, attrs: dict[str, Any]
) -> None:
    self.hash_key = hash_key
    self.range_key = range_key
    values = {key: DynamoType(value) for key, value in attrs.items()}
    if sum(bytesize(key) + value.size() for key, value in values.items()) > _ITEM_SIZE_LIMIT:
        raise ItemSizeTooLarge
    checked = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.__init__(checked, values)
    self.attrs = checked


# Condition expression texts whose tokens are kept. A client sends a handful of distinct
# texts, so the bound only guards against a client that builds a new text for every request.
_LEXED_EXPRESSIONS_MAX = 1024
_lexed_expressions: dict[str, tuple[Any, ...]] = {}
_lex_condition_expression = ConditionExpressionParser._lex_condition_expression


def _lex_once(self: ConditionExpressionParser) -> deque[Any]:
    text = self.condition_expression or ""
    nodes = _lexed_expressions.get(text)
    if nodes is None:
        nodes = tuple(_lex_condition_expression(self))
        if len(_lexed_expressions) < _LEXED_EXPRESSIONS_MAX:
            _lexed_expressions[text] = nodes
    return deque(nodes)


def plain_result(value: Any) -> Any:
    """Expand the ``DynamoType`` values of a result as moto's ``dynamo_to_dict`` does.

    Binary values become bytes, other typed values ``{type: value}``, objects with a
    ``to_json`` their expanded JSON form, and dicts and lists are expanded item by item.
    """
    value_type = type(value)
    if value_type is str:
        return value
    if value_type is dict:
        return {key: plain_result(item) for key, item in value.items()}
    if value_type is list:
        return [plain_result(item) for item in value]
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, DynamoType):
        if value.type == "B":
            return {"B": value.value if isinstance(value.value, bytes) else _decoded(value.value)}
        if value.type == "BS":
            return {"BS": [v if isinstance(v, bytes) else _decoded(v) for v in value.value]}
        return {value.type: plain_result(value.value)}
    if hasattr(value, "to_json"):
        return plain_result(value.to_json())
    if isinstance(value, dict):
        return {key: plain_result(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_result(item) for item in value]
    return value


def _decoded(value: Any) -> bytes:
    return base64.b64decode(value)


# Update expression texts whose parsed trees are kept, bounded as the condition texts are.
_PARSED_UPDATES_MAX = 1024
_parsed_updates: dict[str, Any] = {}
# The pickled copy of each kept tree, by the tree's id. Kept trees live as long as the process,
# so no other object can take one of their ids.
_pickled_updates: dict[int, bytes] = {}
_parse_update_expression = UpdateExpressionParser.make


def parse_update_expression(text: str) -> Any:
    """Return moto's tree of an update expression, parsed once per text."""
    tree = _parsed_updates.get(text)
    if tree is None:
        tree = _parse_update_expression(text)
        if len(_parsed_updates) < _PARSED_UPDATES_MAX:
            _pickled_updates[id(tree)] = pickle.dumps(tree, pickle.HIGHEST_PROTOCOL)
            _parsed_updates[text] = tree
    return tree


def copy_update_expression(value: Any, memo: Any = None) -> Any:
    """Stand in for ``copy.deepcopy`` in moto's validators: unpickle a kept tree's copy."""
    pickled = _pickled_updates.get(id(value)) if memo is None else None
    if pickled is None:
        return copy.deepcopy(value, memo)
    # The bytes come from pickle.dumps of a tree that this process parsed.
    return pickle.loads(pickled)  # noqa: S301


def apply() -> None:
    """Install the patches in this process."""
    # responses imported the function by name.
    responses.dynamo_to_dict = plain_result  # type: ignore[attr-defined,assignment]
    # responses and models call the class method through the class, so it is replaced there.
    UpdateExpressionParser.make = staticmethod(parse_update_expression)
    validators.deepcopy = copy_update_expression  # type: ignore[attr-defined,assignment]
    ConditionExpressionParser._lex_condition_expression = _lex_once  # type: ignore[method-assign]
    Item.__init__ = _item_init  # type: ignore[method-assign]
    DynamoResult.execute_result = _execute_result  # type: ignore[method-assign,assignment]
    responses.DynamoHandler.call_action = _serialized_call_action  # type: ignore[method-assign]
    models.copy = types.SimpleNamespace(deepcopy=_copy_unless_table)  # type: ignore[attr-defined,assignment]
    models.DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    _install_query_patch()
