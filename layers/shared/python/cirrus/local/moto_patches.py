"""A faster DynamoDB transaction for the local stack's moto server (moto 5.2.5).

moto's ``transact_write_items`` deep-copies every table a transaction names, before each of
its items, so that it can roll back. Ingest writes one transaction per instance, so the cost
grows with the index: about 8 instances per second at a few hundred, less beyond (measured
with ``bench/cstore.py``). This patch snapshots only the items a transaction touches and
restores them when it is cancelled, which is the same outcome for the caller.

Applied only in the moto child process that ``cirrus.local.moto_process`` starts.
"""

from __future__ import annotations

import copy
import types
from typing import Any

from moto.dynamodb import models
from moto.dynamodb.exceptions import (
    MockValidationException,
    MultipleTransactionsException,
    TransactionCanceledException,
)
from moto.dynamodb.models.table import Table

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


def apply() -> None:
    """Install the patch in this process."""
    models.copy = types.SimpleNamespace(deepcopy=_copy_unless_table)  # type: ignore[attr-defined,assignment]
    models.DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
