"""Malformed instances through STOW-RS over HTTP and through ingest, on moto.

The cases are the network subset of ``tests/malformed.py``. STOW-RS sends each between two
valid instances in one request: the case is stored as sent or fails with the corpus's failure
reason, the valid ones are stored, and the response status is 200 or 202, never 500. Ingest
takes each case as an object put straight into the bucket, as a tool that bypasses the
gateway would, and either indexes it or reports it as a failed record of the batch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from cirrus.config import Settings
from cirrus.notifications import object_events
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from functions.ingest import handler as ingest_handler
from tests.integration.dicomweb_stack import Stack, post_instances, running_stack
from tests.malformed import (
    ALL_CASES_ENV,
    CANNOT_UNDERSTAND,
    STORED,
    MalformedInput,
    ci_subset,
    fresh_seed,
    network_cases,
)

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
SOP_INSTANCE_UID = "00080018"
SERIES_INSTANCE_UID = "0020000E"
# The UIDs that can form an object key (cirrus.storage.keys), checked here without its code.
KEY_SAFE_UID = re.compile(r"[0-9A-Za-z._-]{1,64}")
SQS_BATCH_SIZE = 10
# The whole corpus (CIRRUS_MALFORMED_ALL=corpus) takes minutes, the CI subset seconds.
TIMEOUT_SECONDS = 3600 if os.environ.get(ALL_CASES_ENV) == "corpus" else 120
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.timeout(TIMEOUT_SECONDS),
]


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def failure_reasons(response: dict[str, Any]) -> list[int]:
    items = response.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    return [item[FAILURE_REASON]["Value"][0] for item in items]


def _value(item: dict[str, Any], tag: str) -> str:
    return str(item[tag]["Value"][0])


def stored_count(response: dict[str, Any]) -> int:
    return len(response.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", []))


def study_counts(stack: Stack, study: str) -> tuple[int, int]:
    """Return NumberOfStudyRelatedInstances and -Series of ``study`` from QIDO."""
    (found,) = stack.client.search_for_studies(
        search_filters={"StudyInstanceUID": study},
        fields=[NUMBER_OF_STUDY_RELATED_INSTANCES, NUMBER_OF_STUDY_RELATED_SERIES],
    )
    instances = found[NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"][0]
    series = found[NUMBER_OF_STUDY_RELATED_SERIES]["Value"][0]
    return int(instances), int(series)


def test_malformed_stow_parts(stack: Stack) -> None:
    study = generate_uid()
    cases = ci_subset(network_cases(study))
    mismatches = []
    expected_keys = set()
    for case in cases:
        first = fresh_seed("MR_small.dcm", study)
        last = fresh_seed("CT_small.dcm", study)
        before = set(stack.instance_keys())

        response = post_instances(f"{stack.url}/studies", [first.data, case.data, last.data])

        body = response.json()
        added = set(stack.instance_keys()) - before
        expected_status = 200 if case.expected == STORED else 202
        reasons = [] if case.expected == STORED else [case.expected]
        outcome = (response.status_code, failure_reasons(body), stored_count(body), len(added))
        expected_outcome = (expected_status, reasons, 3 - len(reasons), 3 - len(reasons))
        if outcome != expected_outcome:
            mismatches.append(
                (case.name, outcome, expected_outcome, response.headers.get("Warning"))
            )
            continue
        if reasons:
            warning = response.headers.get("Warning", "")
            assert f"(0x{case.expected:04X})" in warning, (case.name, warning)
            assert case.reason in warning.lower(), (case.name, warning)
        else:
            stored = {stack.store.get(key) for key in added}
            assert case.data in stored, case.name  # whole, as sent
        expected_keys |= added

    assert not mismatches
    assert set(stack.instance_keys()) == expected_keys
    assert stack.index() == len(expected_keys)
    in_study = {key for key in expected_keys if f"/studies/{study}/" in key}
    series = {key.split("/series/")[1].split("/")[0] for key in in_study}
    assert study_counts(stack, study) == (len(in_study), len(series))
    found = stack.client.search_for_instances(study_instance_uid=study, fields=[SOP_INSTANCE_UID])
    assert len(found) == len(in_study)


def dataset_uids(data: bytes) -> tuple[str, str, str] | None:
    """Return the study, series and SOP Instance UIDs that pydicom reads, when key-safe."""
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True)
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    except Exception:
        return None
    if all(KEY_SAFE_UID.fullmatch(uid) for uid in uids):
        return uids
    return None


def ingest_expected(case: MalformedInput, uids: tuple[str, str, str] | None) -> bool:
    """Tell whether ingest must index the case.

    Ingest indexes whatever parses with key-safe UIDs that match its key: unlike the write
    path, it does not require Pixel Data or UIDs that follow PS3.5 9.1.
    """
    if case.expected == STORED:
        return True
    if case.expected == CANNOT_UNDERSTAND:
        return False
    return uids is not None


def received_records(services: Services, count: int) -> list[dict[str, str]]:
    """Receive ``count`` object-created messages of the ingest queue as Lambda records."""
    sqs = services.clients.sqs
    url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]
    records: list[dict[str, str]] = []
    for _ in range(10 * count):
        if len(records) >= count:
            break
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=600
        ).get("Messages", [])
        records += [
            {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"]}
            for m in messages
            if object_events(m["Body"])
        ]
    return records


def _keys(record: dict[str, str]) -> list[str]:
    return [event.key for event in object_events(record["body"])]


def test_malformed_objects_ingested_or_failed(stack: Stack, settings: Settings) -> None:
    services = Services(settings)
    study = generate_uid()
    cases = network_cases(study)
    placed: dict[str, tuple[MalformedInput, bool]] = {}
    for case in cases:
        uids = dataset_uids(case.data)
        key = InstanceKey(stack.site, *uids).object_key if uids else ""
        if not key or key in placed or case.expected == CANNOT_UNDERSTAND:
            # Rejected cases of one seed share its UIDs. Under a key of other UIDs, an object
            # that parses is not indexed either: ingest reports the mismatch.
            uids = None
            key = InstanceKey(stack.site, study, generate_uid(), generate_uid()).object_key
        services.store.put(key, case.data)
        placed[key] = (case, ingest_expected(case, uids))

    records = received_records(services, len(placed))
    failed_keys = set()
    for start in range(0, len(records), SQS_BATCH_SIZE):
        batch = records[start : start + SQS_BATCH_SIZE]
        result = ingest_handler.handle({"Records": batch}, None, services)
        failed_ids = {item["itemIdentifier"] for item in result["batchItemFailures"]}
        failed_keys |= {key for r in batch if r["messageId"] in failed_ids for key in _keys(r)}

    assert {key for r in records for key in _keys(r)} == set(placed)
    wrong = [
        (case.name, indexed)
        for key, (case, indexed) in placed.items()
        if (key not in failed_keys) != indexed
    ]
    assert not wrong
    # Cases of different seeds may share a series or SOP Instance UID ("1..3", "1.2.abc.4").
    indexed_by_study: dict[str, set[tuple[str, str]]] = {}
    for key, (_, indexed) in placed.items():
        if indexed:
            parsed = InstanceKey.parse(key)
            indexed_by_study.setdefault(parsed.study, set()).add((parsed.series, parsed.sop))
    for indexed_study, instances in indexed_by_study.items():
        found = stack.client.search_for_instances(
            study_instance_uid=indexed_study, fields=[SERIES_INSTANCE_UID, SOP_INSTANCE_UID]
        )
        assert len(found) == len(instances)
        assert {
            (_value(item, SERIES_INSTANCE_UID), _value(item, SOP_INSTANCE_UID)) for item in found
        } == instances
    assert study_counts(stack, study)[0] == len(indexed_by_study.get(study, ()))
