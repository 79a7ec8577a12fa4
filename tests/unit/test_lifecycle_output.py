"""Text output of the hold, retention and stats commands."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cirrus.cli import app
from cirrus.lifecycle import commands
from cirrus.lifecycle.holds import LegalHold
from cirrus.lifecycle.retention import Finding, Outcome

STUDY = "1.2.826.0.1.3680043.8.498.39131316121000977128944879649961264409"


def test_holds_table_keeps_whole_uid() -> None:
    hold = LegalHold("north", STUDY, "litigation " * 8, "local user alice", "2026-12-05", "a1")
    output = io.StringIO()
    Console(file=output, width=80).print(commands.holds_table("north", [hold]))
    assert STUDY in output.getvalue()
    assert "…" not in output.getvalue()


def test_hold_list_help_names_listed_site() -> None:
    result = CliRunner().invoke(app, ["hold", "list", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "The site whose legal holds are listed." in result.output
    assert "The site of the study" not in result.output


def test_deleted_finding_line_has_count_and_audit() -> None:
    finding = Finding(
        "north", STUDY, "20100101", "10 years", Outcome.DELETED, instances=4, audit_record="r-1"
    )
    line = commands.finding_line(finding)
    assert line.startswith(f"deleted  north  {STUDY}  StudyDate 20100101  retention 10 years")
    assert line.endswith("  4 instances  audit record r-1")


def test_held_finding_line_without_audit() -> None:
    finding = Finding("north", STUDY, "20100101", "10 years", Outcome.HELD)
    assert "audit record" not in commands.finding_line(finding)


@pytest.fixture
def empty_index(monkeypatch: pytest.MonkeyPatch) -> None:
    services = SimpleNamespace(index_model=None, store=None)
    target = SimpleNamespace(services=services, name="test")
    monkeypatch.setattr(commands, "_target", lambda *args: (target, None))

    def no_rows(*args: Any) -> dict[str, dict[str, int]]:
        return {}

    monkeypatch.setattr("cirrus.lifecycle.stats.statistics", no_rows)


@pytest.mark.usefixtures("empty_index")
def test_stats_of_empty_site_warns() -> None:
    result = CliRunner().invoke(app, ["stats", "--site", "nosuch"])
    assert result.exit_code == 0
    assert "warning: site 'nosuch' has no studies in the index" in result.stderr

    result = CliRunner().invoke(app, ["stats", "--site", "nosuch", "--json"])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["groups"] == {}
    assert "check the site name" in document["warning"]
