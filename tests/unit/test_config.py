"""Settings and resource names: the checks every process relies on at start."""

from __future__ import annotations

import dataclasses

import pytest

from cirrus.config import ResourceNames, Settings


def test_names_derive_from_the_deployment() -> None:
    names = ResourceNames("north-1")

    assert names.bucket == "north-1-archive"
    assert names.table == "north-1-index"
    assert names.ingest_queue == "north-1-ingest"
    assert names.dead_letter_queue == "north-1-ingest-dlq"
    assert names.kms_alias == "alias/north-1-data"


@pytest.mark.parametrize("deployment", ["", "North", "a_b", "a b", "ä"])
def test_invalid_deployment_names_are_rejected(deployment: str) -> None:
    with pytest.raises(ValueError, match="deployment name"):
        ResourceNames(deployment)


def test_environment_round_trip() -> None:
    settings = Settings.for_names(
        ResourceNames("north"),
        default_site="site-a",
        endpoint_url="http://127.0.0.1:5000",
        cors_origins=("https://viewer.example", "http://127.0.0.1:8080"),
    )

    assert Settings.from_env(settings.to_env()) == settings


def test_origins_from_the_environment_are_split_and_trimmed() -> None:
    environ = {
        "CIRRUS_BUCKET": "b",
        "CIRRUS_TABLE": "t",
        "CIRRUS_KMS_KEY_ID": "alias/k",
        "CIRRUS_CORS_ORIGINS": " https://a.example , ,https://b.example",
    }

    settings = Settings.from_env(environ)

    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.endpoint_url is None
    assert settings.default_site == "default"


def test_missing_environment_variables_are_named() -> None:
    with pytest.raises(ValueError, match="CIRRUS_TABLE, CIRRUS_KMS_KEY_ID"):
        Settings.from_env({"CIRRUS_BUCKET": "b"})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cors_origins", ("viewer.example",), "CORS origin"),
        ("default_site", "Site A", "site"),
        ("bucket", "", "bucket"),
        ("deployment", "UPPER", "deployment name"),
    ],
)
def test_replace_checks_the_new_value(field: str, value: object, message: str) -> None:
    settings = Settings.for_names(ResourceNames())

    with pytest.raises(ValueError, match=message):
        dataclasses.replace(settings, **{field: value})


def test_unknown_overrides_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown settings bucket_name"):
        Settings.for_names(ResourceNames(), bucket_name="x")


def test_settings_are_immutable() -> None:
    settings = Settings.for_names(ResourceNames())

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.bucket = "other"  # type: ignore[misc]
