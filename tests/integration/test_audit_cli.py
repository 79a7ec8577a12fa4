"""``cirrus audit`` as a subprocess: a data folder's journal, or the table of given settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cirrus.audit import Actor, AuditAction, AuditEvent, AuditLog, AuditOutcome, StudyAccess
from cirrus.config import Settings
from cirrus.local.audit_journal import JOURNAL_FILE, FileAuditJournal
from cirrus.services import Services

START = datetime(2026, 4, 2, 8, 0, tzinfo=UTC)
CT = "1.2.840.10008.5.1.4.1.1.2"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cirrus.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        # Wide enough that rich does not wrap the error messages that the tests look for.
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


def events() -> list[AuditEvent]:
    store = AuditEvent(
        action=AuditAction.STORE,
        outcome=AuditOutcome.SUCCESS,
        actor=Actor(ae_title="CT_NORTH", source_ip="10.0.0.5"),
        site="north",
        request_id="assoc-1",
        transport="DIMSE",
        studies=(StudyAccess("1.2.3", instances=("1.2.3.1", "1.2.3.2"), sop_classes=((CT, 2),)),),
        time=START,
    )
    query = AuditEvent(
        action=AuditAction.QUERY,
        outcome=AuditOutcome.MINOR_FAILURE,
        actor=Actor(ae_title="WS_SOUTH", source_ip="10.0.0.6"),
        site="south",
        request_id="assoc-2-1",
        transport="DIMSE",
        query_keys=("PatientName", "StudyDate"),
        query_level="STUDY",
        detail="C-FIND failed with status 0xA900",
        time=START + timedelta(minutes=5),
    )
    retrieve = AuditEvent(
        action=AuditAction.RETRIEVE,
        outcome=AuditOutcome.SUCCESS,
        actor=Actor(principal="radiologist", source_ip="192.0.2.1"),
        site="north",
        request_id="web-1",
        transport="DICOMweb",
        studies=(StudyAccess("1.2.3", sop_classes=((CT, 2),)),),
        time=START + timedelta(days=1),
    )
    return [store, query, retrieve]


@pytest.fixture
def data_dir(tmp_path: Path, settings: Settings) -> Path:
    """A data folder whose journal has the three records of ``events``."""
    folder = tmp_path / "data"
    journal = FileAuditJournal(folder / JOURNAL_FILE)
    log = AuditLog(None, "cirrus", journal)
    for event in events():
        journal.append(log.entry_of(event))
    return folder


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_study_as_json(data_dir: Path) -> None:
    records = json_lines(run_cli("--data-dir", str(data_dir), "--study", "1.2.3", "--json"))

    assert [record["action"] for record in records] == ["store", "retrieve"]
    store = records[0]
    assert store["time"] == START.isoformat(timespec="microseconds")
    assert store["site"] == "north"
    assert store["outcome"] == 0
    assert store["studies"] == ["1.2.3"]
    event = store["message"]["EventIdentification"]
    assert event["EventID"]["csd-code"] == "110104"
    assert event["EventActionCode"] == "C"
    assert store["message"]["AuditSourceIdentification"]["AuditEnterpriseSiteID"] == "north"


def test_time_range_with_filters(data_dir: Path) -> None:
    base = ["--data-dir", str(data_dir), "--json", "--since", "2026-04-02"]

    first_day = json_lines(run_cli(*base, "--until", "2026-04-03T00:00:00Z"))
    south = json_lines(run_cli(*base, "--until", "2026-04-03T00:00:00Z", "--site", "south"))
    retrieves = json_lines(run_cli(*base, "--action", "retrieve"))

    assert [record["request_id"] for record in first_day] == ["assoc-1", "assoc-2-1"]
    assert [record["request_id"] for record in south] == ["assoc-2-1"]
    assert [record["request_id"] for record in retrieves] == ["web-1"]


def test_table_output(data_dir: Path) -> None:
    result = run_cli("--data-dir", str(data_dir), "--since", "2026-04-01")

    assert result.returncode == 0, result.stderr
    output = result.stdout
    for text in ("CT_NORTH", "10.0.0.5", "1.2.3", "radiologist", "minor failure", "3 records"):
        assert text in output
    assert "STUDY PatientName, StudyDate" in output
    assert "0xA900" in output


def test_empty_data_folder(tmp_path: Path) -> None:
    result = run_cli("--data-dir", str(tmp_path), "--study", "1.2.3", "--json")

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --study UID, or --since"),
        (("--until", "2026-04-02"), "--until needs --since"),
        (("--since", "yesterday"), "not an ISO 8601 date or time"),
        (("--since", "2026-04-02", "--action", "erase"), "erase"),
    ],
)
def test_invalid_options(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run_cli("--data-dir", str(tmp_path), *args)

    assert result.returncode == 2
    assert message in result.stderr


def test_missing_data_folder(tmp_path: Path) -> None:
    result = run_cli("--data-dir", str(tmp_path / "absent"), "--study", "1.2.3")

    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_table_of_settings(settings: Settings) -> None:
    audit = Services(settings).audit
    written = [audit.write(event) for event in events()]

    records = json_lines(run_cli("--from-env", "--study", "1.2.3", "--json", env=settings.to_env()))

    assert [record["record_id"] for record in records] == [written[0], written[2]]
    assert records[0]["message"]["AuditSourceIdentification"]["AuditSourceID"] == (
        settings.deployment
    )
