"""``cirrus verify``, ``reindex`` and ``redrive`` on a deployment on moto."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import Settings
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.models import (
    STUDY,
    IndexRecord,
    get_record,
    instance_sk,
    modality_sk,
    series_sk,
    study_pk,
)
from cirrus.local.moto_process import MotoProcess
from cirrus.operations.checkpoint import Checkpoint
from cirrus.operations.counts import CountRepair
from cirrus.operations.redrive import DeadLetter, redrive
from cirrus.operations.reindex import LimitReached, Outcome, Result, reindex
from cirrus.operations.target import Target
from cirrus.operations.verify import Difference, Finding, verify
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from functions.ingest import handler as ingest_handler
from tests.fault_proxy import FaultProxy, dynamodb
from tests.integration.index_snapshot import (
    index_snapshot,
    notifications_of,
    queue_url,
    queued_messages,
    second_index,
)
from tests.integration.test_ingest import _instance

pytestmark = pytest.mark.timeout(120)

# The summaries of the commands' --json output, with every count 0.
VERIFY_ZEROS = {
    "objects": 0,
    "index entries": 0,
    "studies": 0,
    "not indexed": 0,
    "missing object": 0,
    "different": 0,
    "invalid object": 0,
}
REINDEX_ZEROS = {
    "indexed": 0,
    "updated": 0,
    "unchanged": 0,
    "rejected": 0,
    "pruned": 0,
    "missing object": 0,
    "counts repaired": 0,
}


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


@pytest.fixture
def target(services: Services) -> Target:
    return Target(services, "test deployment")


def _archive(services: Services, count: int, study: str | None = None) -> list[InstanceKey]:
    study = study or generate_uid()
    series = generate_uid()
    return [
        archive_instance(services.store, "default", _instance(study, series)).key
        for _ in range(count)
    ]


def _ingest_all(services: Services) -> None:
    """Index every archived object as the ingest Lambda does, from its notification."""
    records = notifications_of(services, "sites/")
    for start in range(0, len(records), 10):
        batch = {"Records": records[start : start + 10]}
        assert ingest_handler.handle(batch, None, services) == {"batchItemFailures": []}


def _empty_index(services: Services) -> None:
    for record in services.index_model.scan():
        record.delete()


def _study_prefix(key: InstanceKey) -> str:
    return f"sites/{key.site}/studies/{key.study}/"


def _verify(target: Target, checkpoint: Checkpoint | None = None) -> set[tuple[str, str, str]]:
    findings: list[Finding] = []
    verify(target, None, checkpoint or Checkpoint(None, "verify", ""), findings.append)
    return {(f.kind.value, f.object_key, f.detail) for f in findings}


def test_verify_consistent_archive(services: Services, target: Target) -> None:
    _archive(services, 3)
    _archive(services, 2)
    _ingest_all(services)
    findings: list[Finding] = []
    progress = verify(target, None, Checkpoint(None, "verify", ""), findings.append)
    assert findings == []
    assert progress.counts == {"objects": 5, "index entries": 5, "studies": 2}


def test_verify_finds_each_difference(services: Services, target: Target) -> None:
    keys = _archive(services, 6)
    _ingest_all(services)
    model = services.index_model
    removed_object, removed_entry, resized, retagged, relabelled, unclaimed = keys

    def record(key: InstanceKey) -> IndexRecord:
        found = get_record(model, study_pk(key.site, key.study), instance_sk(key.series, key.sop))
        assert found is not None
        return found

    services.store.delete([removed_object.object_key])
    record(removed_entry).delete()
    record(resized).update(actions=[model.size.set(1)])
    record(retagged).update(actions=[model.etag.set("0" * 32)])
    changed = record(relabelled)
    changed.update(
        actions=[model.attrs.set({**changed.attrs, "00200013": {"vr": "IS", "Value": [99]}})]
    )
    claim = get_record(model, claim_pk("default", unclaimed.sop), CLAIM)
    assert claim is not None
    claim.delete()
    invalid = f"sites/default/studies/{keys[0].study}/series/{keys[0].series}/instances/1.2.3.dcm"
    services.store.put(invalid, services.store.get(resized.object_key))

    findings = _verify(target)
    assert {(kind, key) for kind, key, _ in findings} == {
        (Difference.MISSING_OBJECT.value, removed_object.object_key),
        (Difference.NOT_INDEXED.value, removed_entry.object_key),
        (Difference.DIFFERENT.value, resized.object_key),
        (Difference.DIFFERENT.value, retagged.object_key),
        (Difference.DIFFERENT.value, relabelled.object_key),
        (Difference.DIFFERENT.value, unclaimed.object_key),
        (Difference.INVALID_OBJECT.value, invalid),
        (Difference.DIFFERENT.value, _study_prefix(keys[0])),
    }
    details = {key: detail for _, key, detail in findings}
    # The entry was deleted behind the index's back, so the counts still include it.
    assert details[_study_prefix(keys[0])] == (
        f"study instance_count 6 but 5 records; series {keys[0].series} instance_count 6 "
        "but 5 records"
    )
    assert details[resized.object_key] == "size"
    assert details[retagged.object_key] == "etag"
    assert details[relabelled.object_key] == "attrs"
    assert details[unclaimed.object_key] == "claim"
    assert "does not match its UIDs" in details[invalid]


def test_verify_finds_count_drift(services: Services, target: Target) -> None:
    keys = _archive(services, 3)
    _ingest_all(services)
    model = services.index_model
    pk = study_pk("default", keys[0].study)
    study = get_record(model, pk, STUDY)
    marker = get_record(model, pk, modality_sk("CT"))
    assert study is not None
    assert marker is not None
    study.update(actions=[model.series_count.set(2)])
    marker.update(actions=[model.instance_count.set(7)])
    assert _verify(target) == {
        (
            Difference.DIFFERENT.value,
            _study_prefix(keys[0]),
            "series_count 2 but 1 series; MODALITY#CT instance_count 7 but study 3",
        )
    }


def test_reindex_rebuilds_emptied_index(services: Services, target: Target) -> None:
    study = generate_uid()
    _archive(services, 4, study)
    _archive(services, 3, study)
    _archive(services, 2)
    _ingest_all(services)
    expected = index_snapshot(services.index_model)
    _empty_index(services)
    assert index_snapshot(services.index_model) == {}

    outcomes: list[Outcome] = []
    progress = reindex(target, None, Checkpoint(None, "reindex", ""), outcomes.append)
    assert progress.counts == {"indexed": 9}
    assert index_snapshot(services.index_model) == expected
    assert _verify(target) == set()

    rebuilt = index_snapshot(services.index_model, ignore=())
    progress = reindex(target, None, Checkpoint(None, "reindex", ""), outcomes.append)
    assert progress.counts == {"unchanged": 9}
    assert index_snapshot(services.index_model, ignore=()) == rebuilt


def test_reindex_repairs_entries(services: Services, target: Target) -> None:
    keys = _archive(services, 5)
    _ingest_all(services)
    expected = index_snapshot(services.index_model)
    model = services.index_model
    unindexed, unclaimed, retagged = keys[:3]
    pk = study_pk("default", unindexed.study)
    record = get_record(model, pk, instance_sk(unindexed.series, unindexed.sop))
    assert record is not None
    record.delete()
    record = get_record(model, pk, instance_sk(retagged.series, retagged.sop))
    assert record is not None
    record.update(actions=[model.etag.set("0" * 32)])
    claim = get_record(model, claim_pk("default", unclaimed.sop), CLAIM)
    assert claim is not None
    claim.delete()
    assert len(_verify(target)) == 4  # the three entries and the study's counts

    outcomes: list[Outcome] = []
    progress = reindex(target, None, Checkpoint(None, "reindex", ""), outcomes.append)
    # The deleted record counts as new, while its study, series and CT marker counted it
    # already, so the studies pass rewrites those three records.
    assert progress.counts == {"indexed": 1, "updated": 1, "unchanged": 3, "counts repaired": 3}
    assert [(o.result, o.object_key) for o in outcomes] == [
        *sorted(
            [(Result.INDEXED, unindexed.object_key), (Result.UPDATED, retagged.object_key)],
            key=lambda item: item[1],
        ),
        (Result.COUNTS_REPAIRED, _study_prefix(unindexed)),
    ]
    assert _verify(target) == set()
    assert index_snapshot(model) == expected


def _drift_counts(services: Services, key: InstanceKey, study_instances: int) -> None:
    """Set wrong counts on the study, series and CT marker of ``key``, as a bad write would."""
    model = services.index_model
    pk = study_pk("default", key.study)
    study = get_record(model, pk, STUDY)
    series = get_record(model, pk, series_sk(key.series))
    marker = get_record(model, pk, modality_sk("CT"))
    assert study is not None
    assert series is not None
    assert marker is not None
    study.update(actions=[model.series_count.set(2), model.instance_count.set(study_instances)])
    series.update(actions=[model.instance_count.set(9)])
    marker.update(actions=[model.instance_count.set(7), model.series_count.set(4)])


def test_reindex_repairs_count_drift(services: Services, target: Target) -> None:
    keys = _archive(services, 3)
    _archive(services, 2)
    _ingest_all(services)
    expected = index_snapshot(services.index_model)
    _drift_counts(services, keys[0], study_instances=5)
    model = services.index_model
    pk = study_pk("default", keys[0].study)
    # A series record without instance records, which counts in no study.
    model(pk, series_sk(generate_uid()), level="SERIES", site="default", instance_count=2).save()
    assert len(_verify(target)) == 1

    outcomes: list[Outcome] = []
    progress = reindex(target, None, Checkpoint(None, "reindex", ""), outcomes.append)
    assert progress.counts == {"unchanged": 5, "counts repaired": 4}
    assert outcomes == [
        Outcome(Result.COUNTS_REPAIRED, _study_prefix(keys[0]), "4 records"),
    ]
    assert _verify(target) == set()
    assert index_snapshot(services.index_model) == expected
    progress = reindex(target, None, Checkpoint(None, "reindex", ""), outcomes.append)
    assert progress.counts == {"unchanged": 5}


def test_reindex_removes_study_without_instances(services: Services, target: Target) -> None:
    keys = _archive(services, 2)
    kept = _archive(services, 1)
    _ingest_all(services)
    model = services.index_model
    # The objects and instance records of a study deleted without IndexDeleter, so its
    # study, series and marker records still count them.
    for key in keys:
        services.store.delete([key.object_key])
        record = get_record(model, study_pk("default", key.study), instance_sk(key.series, key.sop))
        claim = get_record(model, claim_pk("default", key.sop), CLAIM)
        assert record is not None
        assert claim is not None
        record.delete()
        claim.delete()

    progress = reindex(target, None, Checkpoint(None, "reindex", ""), lambda outcome: None)
    assert progress.counts == {"unchanged": 1, "counts repaired": 3}
    assert list(model.query(study_pk("default", keys[0].study))) == []
    assert _verify(target) == set()
    assert get_record(model, study_pk("default", kept[0].study), STUDY) is not None


def test_count_repair_yields_to_concurrent_ingest(
    services: Services, target: Target, proxy: FaultProxy
) -> None:
    keys = _archive(services, 3)
    _ingest_all(services)
    model = services.index_model
    pk = study_pk("default", keys[0].study)
    study = get_record(model, pk, STUDY)
    assert study is not None
    # Only the study record is wrong, so only its condition guards the repair's write.
    study.update(actions=[model.instance_count.set(5)])
    proxied = Services(dataclasses.replace(services.settings, endpoint_url=proxy.endpoint_url))
    # The repair reads the study (instance_count 5) and its 3 instance records, and its
    # write waits while a fourth instance of the study is ingested without the proxy.
    hold = proxy.hold(dynamodb("TransactWriteItems"), nth=1)
    written: list[int] = []
    repair = threading.Thread(
        target=lambda: written.append(CountRepair(proxied.index_model).repair(pk))
    )
    repair.start()
    try:
        assert hold.reached.wait(60)
        archive_instance(services.store, "default", _instance(keys[0].study, keys[0].series))
        _ingest_all(services)
    finally:
        hold.release(forward=True)
        repair.join(60)
    assert hold.finished.wait(30)

    # The held write was conditional on instance_count 5, which the ingest made 6, so the
    # repair read again and counted the fourth instance. Only the study record was wrong.
    assert written == [1]
    assert proxy.count("TransactWriteItems") == 2
    study = get_record(model, pk, STUDY, consistent_read=True)
    assert study is not None
    assert study.instance_count == 4
    assert study.series_count == 1
    assert _verify(target) == set()


def test_reindex_resumes_after_limit(services: Services, target: Target, tmp_path: Path) -> None:
    keys = sorted(key.object_key for key in _archive(services, 7))
    path = tmp_path / "reindex.checkpoint"
    first: list[Outcome] = []
    with pytest.raises(LimitReached):
        reindex(target, None, Checkpoint(path, "reindex", "sites/", every=1), first.append, limit=3)
    assert [o.object_key for o in first] == keys[:3]
    saved = json.loads(path.read_text())
    assert saved["after_key"] == keys[2]

    second: list[Outcome] = []
    progress = reindex(target, None, Checkpoint(path, "reindex", "sites/"), second.append)
    assert [o.object_key for o in second] == keys[3:]
    assert progress.counts == {"indexed": 7}
    assert not path.exists()
    record = get_record(
        services.index_model, study_pk("default", InstanceKey.parse(keys[0]).study), STUDY
    )
    assert record is not None
    assert record.instance_count == 7


def test_verify_resumes_after_interrupt(services: Services, target: Target, tmp_path: Path) -> None:
    keys = sorted(key.object_key for key in _archive(services, 6))
    path = tmp_path / "verify.checkpoint"
    checked = 0

    def interrupt() -> None:
        nonlocal checked
        checked += 1
        if checked == 4:
            raise KeyboardInterrupt

    first: list[Finding] = []
    with pytest.raises(KeyboardInterrupt):
        verify(target, None, Checkpoint(path, "verify", "sites/", every=2), first.append, interrupt)
    assert [f.object_key for f in first] == keys[:4]
    assert json.loads(path.read_text())["after_key"] == keys[3]

    second: list[Finding] = []
    progress = verify(target, None, Checkpoint(path, "verify", "sites/"), second.append)
    assert [f.object_key for f in second] == keys[4:]
    assert progress.counts == {"objects": 6, "not indexed": 6}


def test_reindex_prune_removes_orphans(services: Services, target: Target) -> None:
    keys = _archive(services, 3)
    _ingest_all(services)
    services.store.delete([keys[0].object_key])
    reported: list[Outcome] = []
    progress = reindex(target, None, Checkpoint(None, "reindex", ""), reported.append)
    assert progress.counts == {"unchanged": 2, "missing object": 1}
    progress = reindex(target, None, Checkpoint(None, "reindex", ""), reported.append, prune=True)
    assert progress.counts == {"unchanged": 2, "pruned": 1}
    assert [(o.result, o.object_key) for o in reported] == [
        (Result.MISSING_OBJECT, keys[0].object_key),
        (Result.PRUNED, keys[0].object_key),
    ]
    pk = study_pk("default", keys[0].study)
    series = get_record(services.index_model, pk, series_sk(keys[0].series))
    assert series is not None
    assert series.instance_count == 2
    assert _verify(target) == set()


def test_redrive_moves_at_most_max(services: Services, target: Target) -> None:
    keys = _archive(services, 3)
    sqs = services.clients.sqs
    dead_letters = queue_url(services, dead_letter=True)
    for record in notifications_of(services, "sites/"):
        sqs.send_message(QueueUrl=dead_letters, MessageBody=record["body"])
    listed: list[DeadLetter] = []
    assert redrive(target, listed.append, dry_run=True) == 3
    assert sorted(m.content for m in listed) == sorted(k.object_key for k in keys)
    assert queued_messages(services, dead_letter=True) == 3
    ingest_before = queued_messages(services)

    moved: list[DeadLetter] = []
    assert redrive(target, moved.append, max_messages=2) == 2
    assert queued_messages(services, dead_letter=True) == 1
    assert queued_messages(services) == ingest_before + 2
    assert redrive(target, moved.append) == 1
    assert queued_messages(services, dead_letter=True) == 0
    assert sorted(m.content for m in moved) == sorted(k.object_key for k in keys)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cirrus.cli", *args, "--from-env", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **settings.to_env()},
        check=False,
    )


def test_cli_from_env(services: Services) -> None:
    keys = _archive(services, 2)
    _ingest_all(services)
    result = _cli(services.settings, "verify", "--site", "default")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "summary": {**VERIFY_ZEROS, "objects": 2, "index entries": 2, "studies": 1},
        "differences": 0,
    }

    services.store.delete([keys[1].object_key])
    result = _cli(services.settings, "verify")
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {"kind": "missing object", "key": keys[1].object_key, "detail": ""}
    assert lines[-1]["differences"] == 1

    result = _cli(services.settings, "reindex", "--prune")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {"result": "pruned", "key": keys[1].object_key, "reason": ""}
    assert lines[-1] == {
        "summary": {**REINDEX_ZEROS, "unchanged": 1, "pruned": 1},
        "complete": True,
    }


def test_cli_without_settings_fails() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRRUS_")}
    result = subprocess.run(
        [sys.executable, "-m", "cirrus.cli", "verify", "--from-env"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "missing environment variables CIRRUS_BUCKET" in result.stderr


def test_killed_reindex_resumes(
    services: Services, moto_server: MotoProcess, proxy: FaultProxy, tmp_path: Path
) -> None:
    study = generate_uid()
    # Each object is in a series of its own, so that each is indexed alone, in one transaction.
    keys = sorted(key.object_key for _ in range(6) for key in _archive(services, 1, study))
    reference = second_index(services.settings, moto_server.endpoint_url)
    records = notifications_of(services, "sites/")
    assert ingest_handler.handle({"Records": records}, None, reference) == {"batchItemFailures": []}
    proxied = dataclasses.replace(services.settings, endpoint_url=proxy.endpoint_url)
    path = tmp_path / "reindex.checkpoint"
    command = [
        sys.executable, "-m", "cirrus.cli", "reindex", "--from-env", "--json",
        "--checkpoint", str(path), "--checkpoint-every", "1",
    ]  # fmt: skip
    env = {**os.environ, **proxied.to_env()}
    # The third transaction indexes the third object, after two are checkpointed.
    hold = proxy.hold(dynamodb("TransactWriteItems"), nth=3)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert hold.reached.wait(60)
        assert json.loads(path.read_text())["after_key"] == keys[1]
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate(timeout=30)
    hold.release(forward=False)
    proxy.clear()

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["key"] for line in lines[:-1]] == keys[2:]
    # Counted on from the checkpoint: the first two objects were not read again, which
    # would have counted them as unchanged.
    assert lines[-1] == {"summary": {**REINDEX_ZEROS, "indexed": 6}, "complete": True}
    assert not path.exists()
    assert index_snapshot(services.index_model) == index_snapshot(reference.index_model)


def test_cli_warns_on_empty_site(services: Services) -> None:
    _archive(services, 1)
    _ingest_all(services)
    warning = "site 'nosuch' has no objects and no index entries; check the site name"

    result = _cli(services.settings, "verify", "--site", "nosuch")
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr
    assert json.loads(result.stdout) == {
        "summary": VERIFY_ZEROS,
        "differences": 0,
        "warning": warning,
    }

    result = _cli(services.settings, "reindex", "--site", "nosuch")
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr
    assert json.loads(result.stdout) == {
        "summary": REINDEX_ZEROS,
        "complete": True,
        "warning": warning,
    }

    result = _cli(services.settings, "verify", "--site", "default")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert "warning" not in json.loads(result.stdout)


_CHECKPOINT: dict[str, object] = {
    "command": "reindex",
    "scope": "sites/default/",
    "phase": "objects",
    "after_key": "",
    "after_record": None,
    "counts": {},
}


@pytest.mark.parametrize(
    "document",
    [
        [1, 2],
        "objects",
        None,
        {**_CHECKPOINT, "phase": "bogus"},
        {**_CHECKPOINT, "phase": None},
        {**_CHECKPOINT, "after_key": 3},
        {key: value for key, value in _CHECKPOINT.items() if key != "after_key"},
        {**_CHECKPOINT, "after_record": "pk"},
        {key: value for key, value in _CHECKPOINT.items() if key != "after_record"},
        {**_CHECKPOINT, "counts": [1]},
        {**_CHECKPOINT, "counts": {"indexed": "2"}},
        {**_CHECKPOINT, "counts": {"indexed": True}},
        {**_CHECKPOINT, "counts": {"indexed": -1}},
        {**_CHECKPOINT, "counts": {"indexed": 1.5}},
    ],
)
def test_cli_rejects_malformed_checkpoint(
    services: Services, tmp_path: Path, document: object
) -> None:
    path = tmp_path / "reindex.checkpoint"
    text = json.dumps(document)
    path.write_text(text)
    result = _cli(services.settings, "reindex", "--site", "default", "--checkpoint", str(path))
    assert result.returncode == 2, result.stderr
    assert f"checkpoint {path} is invalid" in result.stderr
    assert "delete it to start over" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_text() == text


def test_checkpoint_accepts_saved_document(tmp_path: Path) -> None:
    path = tmp_path / "reindex.checkpoint"
    path.write_text(json.dumps({**_CHECKPOINT, "phase": "index", "counts": {"indexed": 2}}))
    progress = Checkpoint(path, "reindex", "sites/default/").load()
    assert progress.phase == "index"
    assert progress.counts == {"indexed": 2}
