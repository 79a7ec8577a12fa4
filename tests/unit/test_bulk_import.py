"""The parts of ``cirrus import`` that need no running stack.

Argument parsing, the checkpoint, the report, and runs of the importer into a
``FolderObjectStore`` without notifications or claims.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from typer.testing import CliRunner

from cirrus.bulk_import.checkpoint import ImportCheckpoint
from cirrus.bulk_import.dimse_source import Peer, parse_peer
from cirrus.bulk_import.outcome import Outcome, Result
from cirrus.bulk_import.report import ReportFile, Summary
from cirrus.bulk_import.run import ImportRun, RunCounts
from cirrus.bulk_import.sources import (
    FolderSource,
    PathsSource,
    Source,
    SourceUnavailableError,
    Unit,
    UnitImport,
    ZipSource,
    local_source,
)
from cirrus.bulk_import.study_filter import StudyFilter
from cirrus.bulk_import.writer import DICOMDIR, NOT_PART10, UNNAMED_ZIP, InstanceImporter
from cirrus.cli import app
from cirrus.errors import StoreUnavailableError
from cirrus.lifecycle.holds import LegalHold, hold_key
from cirrus.local.datadir import FolderObjectStore
from cirrus.operations.checkpoint import CheckpointError
from cirrus.storage.keys import InstanceKey
from tests.e2e.import_helpers import write_ct_series
from tests.pydicom_files import bundled

# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "peer"),
    [
        ("ORTHANC@127.0.0.1:4242", Peer("ORTHANC", "127.0.0.1", 4242)),
        ("PACS@pacs.example:104", Peer("PACS", "pacs.example", 104)),
        ("A@B@127.0.0.1:11112", Peer("A@B", "127.0.0.1", 11112)),
        ("OLD@[::1]:104", Peer("OLD", "::1", 104)),
    ],
)
def test_parse_peer(value: str, peer: Peer) -> None:
    assert parse_peer(value) == peer


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("127.0.0.1:104", "AE title is missing"),
        ("@127.0.0.1:104", "AE title is missing"),
        ("ORTHANC@127.0.0.1", "host or the port is missing"),
        ("ORTHANC@:104", "host or the port is missing"),
        ("ORTHANC@127.0.0.1:0", "is not 1 to 65535"),
        ("ORTHANC@127.0.0.1:65536", "is not 1 to 65535"),
        ("ORTHANC@127.0.0.1:http", "is not 1 to 65535"),
        ("A_TITLE_OF_MORE_THAN_16@127.0.0.1:104", "16"),
    ],
)
def test_parse_peer_invalid(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_peer(value)


def test_study_filter_qido() -> None:
    study_filter = StudyFilter(("1.2.3", "1.2.4"), date(2020, 1, 2), None, "P1")
    assert study_filter.qido_searches() == [
        {"StudyDate": "20200102-", "PatientID": "P1", "StudyInstanceUID": "1.2.3"},
        {"StudyDate": "20200102-", "PatientID": "P1", "StudyInstanceUID": "1.2.4"},
    ]
    assert StudyFilter().qido_searches() == [{}]
    assert StudyFilter(until=date(2019, 12, 31)).study_date == "-20191231"


def test_study_filter_find_identifier() -> None:
    ds = StudyFilter(("1.2.3", "1.2.4"), date(2020, 1, 2), date(2020, 3, 4)).find_identifier()
    assert ds.QueryRetrieveLevel == "STUDY"
    assert list(ds.StudyInstanceUID) == ["1.2.3", "1.2.4"]
    assert ds.StudyDate == "20200102-20200304"
    assert ds.PatientID == ""
    assert "NumberOfStudyRelatedInstances" in ds


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of PATH"),
        (["x", "--from-dimse", "A@127.0.0.1:1"], "exactly one of PATH"),
        (["x", "--since", "2020-01-01"], "remote source"),
        (["--from-dicomweb", "ftp://127.0.0.1/"], "is not an http:// or https:// URL"),
        (["--from-dicomweb", "http://127.0.0.1/", "--since", "2020-13-01"], "is not a date"),
        (
            [
                "--from-dicomweb",
                "http://127.0.0.1/",
                "--since",
                "2026-01-01",
                "--until",
                "2025-01-01",
            ],
            "--since 2026-01-01 is after --until 2025-01-01",
        ),
        (["--from-dimse", "A@127.0.0.1:1", "--calling-ae", "A" * 17], "16"),
        (["x", "--workers", "0"], "--workers"),
        (["x", "--site", "no/site"], "site"),
    ],
)
def test_import_arguments_invalid(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["import", *args])
    assert result.exit_code == 2
    assert message in result.output


# --- checkpoint ------------------------------------------------------------------------------


def _order(key: str) -> Hashable:
    return key


def test_checkpoint_watermark(tmp_path: Path) -> None:
    path = tmp_path / "import.ckpt"
    checkpoint = ImportCheckpoint(path, "scope", _order)
    for unit in ("a", "b", "c", "d"):
        checkpoint.start(unit)
    checkpoint.count(Result.STORED, 10)
    checkpoint.finish("b")
    checkpoint.finish("d")
    assert checkpoint.state.after is None
    checkpoint.finish("a")
    assert checkpoint.state.after == "b"
    assert checkpoint.state.done == {"d"}
    checkpoint.save()

    resumed = ImportCheckpoint(path, "scope", _order)

    assert resumed.resumed_from_file
    assert [u for u in "abcde" if not resumed.finished_before(u)] == ["c", "e"]
    assert resumed.state.counts == {"stored": 1}
    assert resumed.state.bytes_imported == 10


def test_checkpoint_partial_study(tmp_path: Path) -> None:
    path = tmp_path / "import.ckpt"
    checkpoint = ImportCheckpoint(path, "scope", _order)
    checkpoint.start("study")
    checkpoint.count(Result.STORED, 5, "study", "1.2.1")
    checkpoint.count(Result.REJECTED, 5, "study", "1.2.2")
    checkpoint.save()

    resumed = ImportCheckpoint(path, "scope", _order)

    assert not resumed.finished_before("study")
    assert resumed.imported_before("study", "1.2.1")
    assert resumed.imported_before("study", "1.2.2")
    assert not resumed.imported_before("study", "1.2.3")
    resumed.start("study")
    resumed.finish("study")
    assert resumed.state.partial == {}
    assert resumed.state.after == "study"


def test_checkpoint_complete_deletes_file(tmp_path: Path) -> None:
    path = tmp_path / "import.ckpt"
    checkpoint = ImportCheckpoint(path, "scope", _order)
    checkpoint.save()
    assert path.is_file()
    checkpoint.complete()
    assert not path.exists()


def test_checkpoint_of_other_scope(tmp_path: Path) -> None:
    path = tmp_path / "import.ckpt"
    ImportCheckpoint(path, "folder /a into site default", _order).save()
    with pytest.raises(CheckpointError, match="belongs to `import` on 'folder /a"):
        ImportCheckpoint(path, "folder /b into site default", _order)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("[]", "a JSON list instead of an object"),
        ("{", "is unreadable"),
        ('{"command": "verify", "scope": "s"}', "belongs to `verify`"),
        ('{"command": "import", "scope": "s", "after": 1, "done": [], "partial": {},'
         ' "counts": {}, "bytes": 0}', "after is neither null nor a string"),
        ('{"command": "import", "scope": "s", "after": null, "done": [1], "partial": {},'
         ' "counts": {}, "bytes": 0}', "done is not a list of strings"),
        ('{"command": "import", "scope": "s", "after": null, "done": [], "partial": [],'
         ' "counts": {}, "bytes": 0}', "partial is not an object"),
        ('{"command": "import", "scope": "s", "after": null, "done": [], "partial": {},'
         ' "counts": {"stored": -1}, "bytes": 0}', "counts is not an object of whole numbers"),
        ('{"command": "import", "scope": "s", "after": null, "done": [], "partial": {},'
         ' "counts": {"lost": 1}, "bytes": 0}', "unknown results"),
        ('{"command": "import", "scope": "s", "after": null, "done": [], "partial": {},'
         ' "counts": {}, "bytes": true}', "bytes is not a whole number"),
    ],
)  # fmt: skip
def test_checkpoint_invalid(tmp_path: Path, document: str, problem: str) -> None:
    path = tmp_path / "import.ckpt"
    path.write_text(document)
    with pytest.raises(CheckpointError, match=problem):
        ImportCheckpoint(path, "s", _order)
    assert path.read_text() == document


# --- report ----------------------------------------------------------------------------------


def test_report_document(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "import.json"
    report = ReportFile(path)
    outcomes = [
        Outcome("a.dcm", Result.STORED, size=100, object_key="sites/default/x.dcm"),
        Outcome("b.txt", Result.SKIPPED, NOT_PART10, 7),
        Outcome("c.dcm", Result.REJECTED, "instance has no SOPInstanceUID", 50),
    ]
    this_run = RunCounts()
    for outcome in outcomes:
        report.add(outcome)
        this_run.add(outcome)
    summary = Summary(
        source="folder /in",
        target="local stack on .cirrus",
        site="default",
        started=datetime(2026, 1, 2, tzinfo=UTC),
        seconds=2.0,
        totals={"stored": 3, "skipped": 1, "rejected": 1},
        total_bytes=300,
        this_run=this_run,
        complete=True,
        resumed=True,
        workers=4,
    )

    report.write(summary.to_json())

    document = json.loads(path.read_text())
    assert document["entries"] == [outcome.to_json() for outcome in outcomes]
    assert document["entries"][0] == {
        "name": "a.dcm",
        "result": "stored",
        "size": 100,
        "object_key": "sites/default/x.dcm",
    }
    assert document["totals"] == {
        "stored": 3, "replaced": 0, "duplicate": 0, "rejected": 1, "skipped": 1, "failed": 0,
        "bytes": 300,
    }  # fmt: skip
    assert document["this_run"]["stored"] == 1
    assert document["this_run"]["bytes"] == 100
    assert document["this_run"]["instances_per_second"] == 1.0
    assert document["reasons"] == {
        "skipped": {NOT_PART10: 1},
        "rejected": {"instance has no SOPInstanceUID": 1},
    }
    assert document["source"] == "folder /in"
    assert document["started"] == "2026-01-02T00:00:00+00:00"
    assert (document["complete"], document["resumed"], document["interrupted"]) == (
        True, True, False,
    )  # fmt: skip
    assert sorted(p.name for p in path.parent.iterdir()) == ["import.json"]


def test_report_without_entries(tmp_path: Path) -> None:
    path = tmp_path / "import.json"
    report = ReportFile(path)
    report.write({"command": "import"})
    assert json.loads(path.read_text()) == {"command": "import", "entries": []}


# --- importer --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> FolderObjectStore:
    return FolderObjectStore(tmp_path / "objects", "bucket")


def test_importer_outcomes(store: FolderObjectStore, tmp_path: Path) -> None:
    importer = InstanceImporter(store, None, "default")
    [path] = write_ct_series(tmp_path / "in", 1)
    text = tmp_path / "notes.txt"
    text.write_text("hello")

    first = importer.import_file(path, "ct.dcm")
    again = importer.import_file(path, "copy.dcm")
    from_bytes = importer.import_bytes(path.read_bytes(), "sop")
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = "changed"
    ds.save_as(path, enforce_file_format=True)
    changed = importer.import_file(path, "ct.dcm")

    assert first.result is Result.STORED
    assert first.object_key.startswith("sites/default/studies/")
    assert again.result is Result.DUPLICATE
    assert from_bytes.result is Result.DUPLICATE
    assert changed.result is Result.REPLACED
    assert store.get(first.object_key) == path.read_bytes()
    assert importer.import_file(text, "notes.txt") == Outcome(
        "notes.txt", Result.SKIPPED, NOT_PART10, 5
    )
    assert importer.import_bytes(b"hello", "x").result is Result.REJECTED


def test_importer_held_instance_not_replaced(store: FolderObjectStore, tmp_path: Path) -> None:
    importer = InstanceImporter(store, None, "default")
    [path] = write_ct_series(tmp_path / "in", 1)
    first = importer.import_file(path, "ct.dcm")
    original = path.read_bytes()
    ds = pydicom.dcmread(path)
    hold = LegalHold("default", ds.StudyInstanceUID, "litigation", "officer", "2026-12-05", "a1")
    store.put(hold_key("default", ds.StudyInstanceUID), hold.to_json().encode())

    again = importer.import_file(path, "ct.dcm")
    ds.SeriesDescription = "changed"
    ds.save_as(path, enforce_file_format=True)
    changed = importer.import_file(path, "ct.dcm")
    changed_bytes = importer.import_bytes(path.read_bytes(), "sop")

    assert again.result is Result.DUPLICATE
    assert changed.result is Result.REJECTED
    assert "under legal hold" in changed.reason
    assert changed_bytes.result is Result.REJECTED
    assert store.get(first.object_key) == original


def test_importer_dicomdir_skipped(store: FolderObjectStore) -> None:
    importer = InstanceImporter(store, None, "default")
    outcome = importer.import_file(bundled("dicomdirtests/DICOMDIR"), "DICOMDIR")
    assert outcome.result is Result.SKIPPED
    assert outcome.reason == DICOMDIR


def test_importer_rejects_invalid(store: FolderObjectStore, tmp_path: Path) -> None:
    importer = InstanceImporter(store, None, "default")
    [path] = write_ct_series(tmp_path / "in", 1)
    ds = pydicom.dcmread(path)
    del ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)

    outcome = importer.import_file(path, "ct.dcm")

    assert outcome.result is Result.REJECTED
    assert "SOPInstanceUID (0008,0018)" in outcome.reason
    assert not any(store.list_keys("sites/"))


def test_importer_same_instance_in_parallel(store: FolderObjectStore, tmp_path: Path) -> None:
    importer = InstanceImporter(store, None, "default")
    [path] = write_ct_series(tmp_path / "in", 1)
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(importer.import_file(path, "ct")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.result.value for o in outcomes) == ["duplicate"] * 7 + ["stored"]


# --- runs ------------------------------------------------------------------------------------


class _Interrupting:
    """A folder source that raises KeyboardInterrupt as it lists unit number ``stop_at``."""

    def __init__(self, source: FolderSource, stop_at: int) -> None:
        self._source = source
        self._stop_at = stop_at
        self.description = source.description

    def units(self) -> Iterator[Unit]:
        for number, unit in enumerate(self._source.units()):
            if number == self._stop_at:
                raise KeyboardInterrupt
            yield unit

    def order(self, key: str) -> Hashable:
        return self._source.order(key)

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        self._source.import_unit(unit, target)

    def close(self) -> None:
        pass


def test_run_resumes_without_counting_twice(store: FolderObjectStore, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "in" / "b", 20)
    write_ct_series(tmp_path / "in" / "a", 20)
    (tmp_path / "in" / "a" / "readme.txt").write_text("x")
    path = tmp_path / "import.ckpt"
    importer = InstanceImporter(store, None, "default")
    source = FolderSource(tmp_path / "in")
    checkpoint = ImportCheckpoint(path, "scope", source.order, every=3)

    with pytest.raises(KeyboardInterrupt):
        ImportRun(source, importer, checkpoint, 4).run(_Interrupting(source, 25).units())

    # Units in flight at Ctrl-C stop before their next instance and are not counted.
    finished = sum(json.loads(path.read_text())["counts"].values())
    assert 0 < finished <= 25
    resumed = ImportCheckpoint(path, "scope", source.order)
    run = ImportRun(source, importer, resumed, 4)
    result = run.run(source.units())

    assert result.this_run.skipped_units == finished
    assert resumed.state.counts == {"stored": 40, "skipped": 1}
    assert sum(1 for _ in store.list_keys("sites/")) == 40


def test_run_stops_on_store_error(store: FolderObjectStore, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "in", 5)
    source = FolderSource(tmp_path / "in")
    checkpoint = ImportCheckpoint(tmp_path / "import.ckpt", "scope", source.order)
    (tmp_path / "objects").mkdir()
    # A file where the site's folder should be makes every write fail.
    (tmp_path / "objects" / "sites").write_text("")
    importer = InstanceImporter(store, None, "default")

    with pytest.raises(StoreUnavailableError, match="write of sites/default/"):
        ImportRun(source, importer, checkpoint, 2).run(source.units())

    assert checkpoint.state.after is None
    assert json.loads((tmp_path / "import.ckpt").read_text())["counts"] == {}


def test_local_source_kinds(tmp_path: Path) -> None:
    import zipfile

    [path] = write_ct_series(tmp_path / "in", 1)
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.write(path, "b/ct.dcm")
        out.write(path, "a-b/ct.dcm")
        out.write(path, "a/z/ct.dcm")
    assert isinstance(local_source(archive), ZipSource)
    assert isinstance(local_source(path), FolderSource)
    assert [u.key for u in local_source(archive).units()] == [
        "a/z/ct.dcm", "a-b/ct.dcm", "b/ct.dcm",
    ]  # fmt: skip
    assert [u.key for u in local_source(path).units()] == ["ct00000.dcm"]


class _Studies:
    """A remote source of two studies of ``size`` instances; ``fail_after`` breaks study s2."""

    description = "studies"

    def __init__(self, files: dict[str, list[Path]], fail_after: int | None = None) -> None:
        self._files = files
        self._fail_after = fail_after

    def units(self) -> Iterator[Unit]:
        for study in sorted(self._files):
            yield Unit(study, len(self._files[study]), tracks_instances=True)

    def order(self, key: str) -> Hashable:
        return key

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        for number, path in enumerate(self._files[unit.key]):
            if unit.key == "s2" and number == self._fail_after:
                raise StoreUnavailableError("S3 request failed with SlowDown")
            target.data(path.read_bytes(), str(pydicom.dcmread(path).SOPInstanceUID))

    def close(self) -> None:
        pass


def test_run_resumes_inside_study(store: FolderObjectStore, tmp_path: Path) -> None:
    files = {
        "s1": write_ct_series(tmp_path / "s1", 4),
        "s2": write_ct_series(tmp_path / "s2", 6),
    }
    path = tmp_path / "import.ckpt"
    importer = InstanceImporter(store, None, "default")
    broken = _Studies(files, fail_after=4)
    checkpoint = ImportCheckpoint(path, "scope", broken.order)

    with pytest.raises(StoreUnavailableError):
        ImportRun(broken, importer, checkpoint, 1).run(broken.units())

    saved = json.loads(path.read_text())
    assert saved["after"] == "s1"
    assert len(saved["partial"]["s2"]) == 4
    assert saved["counts"] == {"stored": 8}
    source = _Studies(files)
    resumed = ImportCheckpoint(path, "scope", source.order)
    run = ImportRun(source, importer, resumed, 1)
    run.run(source.units())

    assert resumed.state.counts == {"stored": 10}
    assert run.this_run.counts == {"stored": 2}
    assert sum(1 for _ in store.list_keys("sites/")) == 10


# --- ZIP files inside the source, links ------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in members.items():
            out.writestr(name, data)
    return path


def _import_all(source: Source, store: FolderObjectStore) -> list[Outcome]:
    outcomes: list[Outcome] = []
    checkpoint = ImportCheckpoint(None, "scope", source.order)
    importer = InstanceImporter(store, None, "default")
    try:
        ImportRun(source, importer, checkpoint, 2, outcomes.append).run(source.units())
    finally:
        source.close()
    return sorted(outcomes, key=lambda outcome: outcome.name)


def test_zip_inside_zip_imported(store: FolderObjectStore, tmp_path: Path) -> None:
    first, second, third, fourth = (p.read_bytes() for p in write_ct_series(tmp_path / "in", 4))
    inner = _zip(tmp_path / "inner.zip", {"a.dcm": first, "deeper/b.dcm": second})
    innermost = _zip(tmp_path / "innermost.zip", {"c.dcm": third})
    middle = _zip(tmp_path / "middle.zip", {"innermost.zip": innermost.read_bytes()})
    outer = _zip(
        tmp_path / "outer.zip",
        {"inner.zip": inner.read_bytes(), "x/middle.zip": middle.read_bytes(), "d.dcm": fourth},
    )

    outcomes = _import_all(local_source(outer), store)

    assert [o.name for o in outcomes] == [
        "d.dcm",
        "inner.zip/a.dcm",
        "inner.zip/deeper/b.dcm",
        "x/middle.zip/innermost.zip/c.dcm",
    ]
    assert all(o.result is Result.STORED for o in outcomes)
    assert sum(1 for _ in store.list_keys("sites/")) == 4


def test_zip_inside_folder_imported(store: FolderObjectStore, tmp_path: Path) -> None:
    first, second = (p.read_bytes() for p in write_ct_series(tmp_path / "files", 2))
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    _zip(folder / "sub" / "nested.ZIP", {"a.dcm": first, "b.dcm": second})
    (folder / "sub" / "z.txt").write_text("notes")

    source = FolderSource(folder)
    keys = [unit.key for unit in source.units()]
    outcomes = _import_all(source, store)

    assert keys == ["sub/nested.ZIP/a.dcm", "sub/nested.ZIP/b.dcm", "sub/z.txt"]
    assert [o.result for o in outcomes] == [Result.STORED, Result.STORED, Result.SKIPPED]


def test_zip_nested_too_deep(store: FolderObjectStore, tmp_path: Path) -> None:
    from cirrus.bulk_import.sources import MAX_ZIP_DEPTH

    [path] = write_ct_series(tmp_path / "in", 1)
    data = _zip(tmp_path / "level.zip", {"ct.dcm": path.read_bytes()}).read_bytes()
    for _ in range(MAX_ZIP_DEPTH + 1):
        data = _zip(tmp_path / "level.zip", {"level.zip": data}).read_bytes()

    [outcome] = _import_all(local_source(tmp_path / "level.zip"), store)

    assert outcome.name == "/".join(["level.zip"] * (MAX_ZIP_DEPTH + 1))
    assert outcome.result is Result.FAILED
    assert f"more than {MAX_ZIP_DEPTH} levels" in outcome.reason


def test_zip_without_zip_name_fails(store: FolderObjectStore, tmp_path: Path) -> None:
    [path] = write_ct_series(tmp_path / "files", 1)
    folder = tmp_path / "in"
    folder.mkdir()
    _zip(folder / "backup.bin", {"ct.dcm": path.read_bytes()})
    _zip(folder / "outer.zip", {"member.bin": (folder / "backup.bin").read_bytes()})

    outcomes = _import_all(FolderSource(folder), store)

    assert [(o.name, o.result, o.reason) for o in outcomes] == [
        ("backup.bin", Result.FAILED, UNNAMED_ZIP),
        ("outer.zip/member.bin", Result.FAILED, UNNAMED_ZIP),
    ]


def test_links_counted(store: FolderObjectStore, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_ct_series(folder / "real", 1)
    (folder / "broken_link.dcm").symlink_to(tmp_path / "missing.dcm")
    (folder / "folder_link").symlink_to(folder / "real")

    outcomes = _import_all(FolderSource(folder), store)

    assert [(o.name, o.result) for o in outcomes] == [
        ("broken_link.dcm", Result.FAILED),
        ("folder_link", Result.SKIPPED),
        ("real/ct00000.dcm", Result.STORED),
    ]
    assert "does not exist" in outcomes[0].reason
    assert "not followed" in outcomes[1].reason


# --- two imports of one source at once ---------------------------------------------------------


class _Claims:
    """SOP Instance UID claims in memory, as ``InstanceClaims`` keeps them in the index."""

    def __init__(self, calls_before_signal: int) -> None:
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._calls = 0
        self._calls_before_signal = calls_before_signal
        self.claimed = threading.Event()

    def claim(self, key: InstanceKey) -> bool:
        with self._lock:
            self._calls += 1
            if self._calls == self._calls_before_signal:
                self.claimed.set()
            holder = self._held.setdefault(key.sop, key.object_key)
            assert holder == key.object_key
            return self._calls == 1

    def release(self, key: InstanceKey) -> None:
        with self._lock:
            self._held.pop(key.sop, None)


class _SlowStore(FolderObjectStore):
    """A store whose first write waits until ``proceed`` is set, and that counts writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "bucket")
        self.proceed = threading.Event()
        self.writes = 0

    def put_file(self, key: str, path: Path, *args: Any, **kwargs: Any) -> Any:
        self._count_and_wait()
        return super().put_file(key, path, *args, **kwargs)

    def put_file_after(self, key: str, path: Path, *args: Any, **kwargs: Any) -> Any:
        self._count_and_wait()
        return super().put_file_after(key, path, *args, **kwargs)

    def _count_and_wait(self) -> None:
        self.writes += 1
        if self.writes == 1:
            assert self.proceed.wait(60)


def test_concurrent_imports_store_once(tmp_path: Path) -> None:
    [path] = write_ct_series(tmp_path / "in", 1)
    store = _SlowStore(tmp_path / "objects")
    claims = _Claims(calls_before_signal=2)
    # Two importers stand for two processes: they share the store and the claims only.
    first = InstanceImporter(store, claims, "default")  # type: ignore[arg-type]
    second = InstanceImporter(store, claims, "default")  # type: ignore[arg-type]
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(first.import_file(path, "ct"))),
        threading.Thread(target=lambda: outcomes.append(second.import_file(path, "ct"))),
    ]
    threads[0].start()
    threads[1].start()
    # Both have claimed before the first write ends.
    assert claims.claimed.wait(60)
    store.proceed.set()
    for thread in threads:
        thread.join(60)

    assert sorted(outcome.result.value for outcome in outcomes) == ["duplicate", "stored"]
    assert store.writes == 1


def test_several_paths(store: FolderObjectStore, tmp_path: Path) -> None:
    first, second, third = write_ct_series(tmp_path / "in", 3)
    archive = _zip(tmp_path / "more.zip", {"x/ct.dcm": third.read_bytes()})
    folder = tmp_path / "folder"
    folder.mkdir()
    second.rename(folder / "ct.dcm")
    paths = (first, archive, folder)

    source = PathsSource([local_source(path) for path in paths], paths)
    keys = [unit.key for unit in source.units()]
    outcomes = _import_all(source, store)

    assert keys == [str(first), f"{archive}/x/ct.dcm", f"{folder}/ct.dcm"]
    assert sorted(source.order(key) for key in keys) == [source.order(key) for key in keys]
    assert sorted(o.name for o in outcomes) == sorted(keys)
    assert all(o.result is Result.STORED for o in outcomes)


def test_reasons_grouped_without_uids() -> None:
    counts = RunCounts()
    for sop, study in (("1.2.3.4", "1.2.840.5"), ("1.2.3.5", "1.2.840.6")):
        reason = f"SOP Instance UID {sop} is already stored in study {study}, series 1.2.9"
        counts.add(Outcome(sop, Result.REJECTED, reason))
    counts.add(Outcome("s", Result.FAILED, "ZIP member of 1048576 bytes is larger than 5.0"))

    assert counts.reasons == {
        "rejected": {"SOP Instance UID <UID> is already stored in study <UID>, series <UID>": 2},
        "failed": {"ZIP member of 1048576 bytes is larger than 5.0": 1},
    }


def test_dicomweb_unreachable_names_cause() -> None:
    from cirrus.bulk_import.dicomweb_source import DicomwebSource
    from tests.e2e.conftest import free_port

    port = free_port()
    source = DicomwebSource(f"http://127.0.0.1:{port}/dicom-web", StudyFilter())
    try:
        with pytest.raises(SourceUnavailableError) as error:
            list(source.units())
    finally:
        source.close()

    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in str(error.value)


def test_claim_warning_names_object_key(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from cirrus.bulk_import.command import log_warnings_to_stderr
    from cirrus.index.claims import _log_not_released

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # A Lambda handler run earlier in this process leaves its JSON handler on "cirrus", as a
    # command's process never has.
    package = logging.getLogger("cirrus")
    package_state = (package.handlers[:], package.propagate, package.level)
    package.handlers[:] = []
    package.propagate = True
    package.setLevel(logging.NOTSET)
    key = InstanceKey("default", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    try:
        log_warnings_to_stderr()
        _log_not_released(key, TimeoutError())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        package.handlers[:], package.propagate, _ = package_state
        package.setLevel(package_state[2])

    error = capsys.readouterr().err
    assert "claim of a failed write not released" in error
    assert f"object_key={key.object_key}" in error
    assert "error=TimeoutError" in error
