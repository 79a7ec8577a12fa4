"""Validation of lifecycle rules files and the S3 configuration and retention they give."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cirrus.cli import app
from cirrus.lifecycle.commands import describe_rules
from cirrus.lifecycle.rules import RulesError, load_rules, parse_rules

NORTH_CT = {
    "site": "north",
    "modality": "CT",
    "transitions": [
        {"days": 30, "storage_class": "STANDARD_IA"},
        {"days": 180, "storage_class": "GLACIER_IR"},
    ],
    "retain_years": 10,
}


def rules_of(*rules: dict[str, Any]) -> str:
    return json.dumps({"rules": list(rules)})


def test_example_gives_s3_rule() -> None:
    rules = parse_rules(rules_of(NORTH_CT, {"site": "north", "retain_days": 3650}))
    assert rules.s3_rules() == [
        {
            "ID": "tier-north-CT",
            "Status": "Enabled",
            "Filter": {
                "And": {"Prefix": "sites/north/", "Tags": [{"Key": "modality", "Value": "CT"}]}
            },
            "Transitions": [
                {"Days": 30, "StorageClass": "STANDARD_IA"},
                {"Days": 180, "StorageClass": "GLACIER_IR"},
            ],
        }
    ]
    assert rules.sites == ["north"]


def test_site_rule_filters_on_prefix_only() -> None:
    rule = {"site": "south", "transitions": [{"days": 0, "storage_class": "INTELLIGENT_TIERING"}]}
    (s3_rule,) = parse_rules(rules_of(rule)).s3_rules()
    assert s3_rule["Filter"] == {"Prefix": "sites/south/"}


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_archive_classes_rejected(storage_class: str) -> None:
    rule = {"site": "north", "transitions": [{"days": 90, "storage_class": storage_class}]}
    with pytest.raises(RulesError, match="must be restored before they can be read"):
        parse_rules(rules_of(rule))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"site": "North", "retain_days": 1}, "site 'North' is invalid"),
        ({"retain_days": 1}, 'rule 1 has no "site"'),
        ({"site": "north", "modality": "ct", "retain_days": 1}, "modality 'ct' is invalid"),
        ({"site": "north"}, "neither transitions nor a retention"),
        ({"site": "north", "retain_days": 0}, "retain_days must be a whole number"),
        ({"site": "north", "retain_years": "10"}, "retain_years must be a whole number"),
        ({"site": "north", "retain_days": True}, "retain_days must be a whole number"),
        ({"site": "north", "retain_years": 8000}, "retain_years must be .* to 1,000, not 8000"),
        ({"site": "north", "retain_days": 99999999}, "retain_days must be .* to 365,000"),
        ({"site": "north", "retain_days": 1, "retain_years": 1}, "not both"),
        ({"site": "north", "retain_day": 1}, "unknown keys"),
        (
            {"site": "north", "transitions": [{"days": 10, "storage_class": "STANDARD_IA"}]},
            "only after 30 days",
        ),
        (
            {"site": "north", "transitions": [{"days": 1, "storage_class": "REDUCED"}]},
            "storage class 'REDUCED' is unknown",
        ),
        (
            {"site": "north", "transitions": [{"days": -1, "storage_class": "GLACIER_IR"}]},
            "days must be a whole number of at least 0",
        ),
        (
            {"site": "north", "transitions": [{"days": 1}]},
            'exactly "days" and "storage_class"',
        ),
        (
            {
                "site": "north",
                "transitions": [
                    {"days": 30, "storage_class": "STANDARD_IA"},
                    {"days": 45, "storage_class": "GLACIER_IR"},
                ],
            },
            "day 60 or later",
        ),
        (
            {
                "site": "north",
                "transitions": [
                    {"days": 90, "storage_class": "GLACIER_IR"},
                    {"days": 60, "storage_class": "INTELLIGENT_TIERING"},
                ],
            },
            "increasing days",
        ),
    ],
)
def test_invalid_rule_rejected(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_rules(rules_of(rule))


def test_duplicate_rules_rejected() -> None:
    with pytest.raises(RulesError, match="two rules for modality CT"):
        parse_rules(rules_of(NORTH_CT, NORTH_CT))


def test_overlapping_transitions_rejected() -> None:
    site_wide = {"site": "north", "transitions": [{"days": 0, "storage_class": "GLACIER_IR"}]}
    with pytest.raises(RulesError, match="S3 would apply both"):
        parse_rules(rules_of(NORTH_CT, site_wide))


@pytest.mark.parametrize("text", ["", "[]", '{"rules": {}}', "{rules: []}"])
def test_malformed_document_rejected(text: str) -> None:
    with pytest.raises(RulesError):
        parse_rules(text)


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "absent.json")


def test_retention_takes_longest_of_modalities() -> None:
    rules = parse_rules(
        rules_of(
            {"site": "north", "modality": "CT", "retain_years": 10},
            {"site": "north", "modality": "SR", "retain_days": 30},
        )
    )
    rule = rules.retention_of("north", {"CT", "SR"})
    assert rule is not None
    assert rule.modality == "CT"
    assert rules.retention_of("north", {"CT", "MR"}) is None
    assert rules.retention_of("north", set()) is None
    assert rules.retention_of("south", {"CT"}) is None


def test_site_rule_covers_other_modalities() -> None:
    rules = parse_rules(
        rules_of(
            {"site": "north", "modality": "CT", "retain_days": 100},
            {"site": "north", "retain_days": 200},
        )
    )
    assert rules.retention_of("north", {"CT"}).retain_days == 100  # type: ignore[union-attr]
    assert rules.retention_of("north", {"MR"}).retain_days == 200  # type: ignore[union-attr]
    assert rules.retention_of("north", set()).retain_days == 200  # type: ignore[union-attr]


def test_years_count_calendar_years() -> None:
    (rule,) = parse_rules(rules_of({"site": "north", "retain_years": 10})).rules
    assert rule.expires_before(date(2026, 12, 5)) == date(2016, 12, 5)
    assert rule.expires_before(date(2028, 2, 29)) == date(2018, 2, 28)


def test_longest_retention_gives_valid_date() -> None:
    for rule in ({"site": "north", "retain_years": 1000}, {"site": "north", "retain_days": 365000}):
        (parsed,) = parse_rules(rules_of(rule)).rules
        assert parsed.expires_before(date(2026, 12, 5)) > date.min
    assert parsed.expires_before(date(900, 1, 1)) == date.min


def test_cli_retention_invalid_rules_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(rules_of({"site": "north", "retain_years": 8000}))
    result = CliRunner().invoke(
        app, ["retention", "apply", "--rules", str(path), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "retain_years must be a whole number from 1 to 1,000" in result.output
    assert "Traceback" not in result.output


def test_cli_check_and_show(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(rules_of(NORTH_CT))
    runner = CliRunner()
    result = runner.invoke(app, ["lifecycle", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: valid, 1 rule for site north" in result.output
    result = runner.invoke(app, ["lifecycle", "show", "--json", str(path)])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["s3_lifecycle_configuration"]["Rules"]
    assert shown == parse_rules(rules_of(NORTH_CT)).s3_rules()


def test_duplicate_keys_rejected() -> None:
    text = '{"rules": [{"site": "north", "retain_days": 1}], "rules": []}'
    with pytest.raises(RulesError, match="key 'rules' appears twice"):
        parse_rules(text, "dupkey.json")
    with pytest.raises(RulesError, match="key 'site' appears twice"):
        parse_rules('{"rules": [{"site": "north", "site": "south", "retain_days": 1}]}')


@pytest.mark.parametrize(
    ("rules", "summary"),
    [
        ([], "valid, no rules"),
        ([{"site": "north", "retain_days": 1}], "valid, 1 rule for site north"),
        (
            [{"site": "north", "retain_days": 1}, {"site": "south", "retain_days": 1}],
            "valid, 2 rules for sites north, south",
        ),
    ],
)
def test_rules_summary(rules: list[dict[str, Any]], summary: str) -> None:
    assert describe_rules(parse_rules(rules_of(*rules))) == summary


def test_cli_check_warns_on_empty_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(rules_of())
    result = CliRunner().invoke(app, ["lifecycle", "check", str(path)])
    assert result.exit_code == 0
    assert f"{path}: valid, no rules" in result.stdout
    assert "warning: " in result.stderr
    assert "empty rules list" in result.stderr


def test_cli_check_invalid_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(
        rules_of({"site": "north", "transitions": [{"days": 90, "storage_class": "GLACIER"}]})
    )
    result = CliRunner().invoke(app, ["lifecycle", "check", str(path)])
    assert result.exit_code == 1
    assert "GLACIER is rejected" in result.output
