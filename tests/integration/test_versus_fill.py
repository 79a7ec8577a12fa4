"""The direct fill of the side-by-side benchmark (bench/versus_fill.py) against ingest.

The direct fill writes index records without the ingest handler. These tests index the same
objects with the ingest handler into a second table and compare the two tables item by item.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from bench.versus_fill import DirectFill, fill_study
from cirrus.config import Settings
from cirrus.index.models import bind_index_model
from cirrus.local.datadir import FolderObjectStore
from cirrus.local.moto_process import MotoProcess
from functions.ingest import handler as ingest_handler
from tests.integration.index_snapshot import index_snapshot, second_index

# A fresh token per write in both, and the S3 sequencer, which the direct fill makes up.
UNCOMPARED = ("metadata_version", "sequencer")
# SQS hands the ingest Lambda at most 10 messages at a time.
QUEUE_BATCH = 10


def _notifications(store: FolderObjectStore, keys: list[str]) -> list[dict[str, object]]:
    """Return the Lambda records of the S3 notifications of ``keys``, as S3 would send them."""
    records = []
    for number, key in enumerate(keys):
        obj = {"key": quote_plus(key, safe="/"), "size": store.size(key), "eTag": store.etag(key)}
        body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": obj}}]}
        records.append({"messageId": f"m{number}", "receiptHandle": "-", "body": json.dumps(body)})
    return records


@pytest.mark.parametrize("instances", [1, 2, 30])
def test_direct_fill_matches_ingest(
    settings: Settings, moto_server: MotoProcess, tmp_path: Path, instances: int
) -> None:
    store = FolderObjectStore(tmp_path / "objects", settings.bucket)
    direct_model = bind_index_model(settings)
    study = fill_study(1, instances)
    DirectFill(store, direct_model, settings.default_site).add_all([study])

    ingested = second_index(settings, moto_server.endpoint_url)
    ingested.store = store
    keys = sorted(saved.key for saved in store.list_keys("sites/"))
    records = _notifications(store, keys)
    for start in range(0, len(records), QUEUE_BATCH):
        event = {"Records": records[start : start + QUEUE_BATCH]}
        response = ingest_handler.handle(event, None, ingested)
        assert response["batchItemFailures"] == []

    direct = index_snapshot(direct_model, ignore=UNCOMPARED)
    expected = index_snapshot(ingested.index_model, ignore=UNCOMPARED)
    assert len(keys) == instances
    # The study, series and marker records, and each instance's record and claim.
    assert len(direct) == 3 + 2 * instances
    assert direct.keys() == expected.keys()
    for key, item in expected.items():
        assert direct[key] == item, key
