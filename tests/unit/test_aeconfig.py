"""Rules and errors of the gateway's AE configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cirrus.config import DEFAULT_AE_TITLE, DEFAULT_SITE
from cirrus.gateway.aeconfig import ALL_PERMISSIONS, AEConfig, AEConfigError

TWO_SITES: dict[str, Any] = {
    "ae_title": "ARCHIVE",
    "sites": {
        "north": {
            "callers": {"CT_NORTH": ["store"], "WS_NORTH": ["store", "query", "retrieve"]},
            "destinations": {"WS_NORTH": {"host": "127.0.0.1", "port": 11113}},
        },
        "south": {
            "callers": {"CT_SOUTH": ["store"]},
            "destinations": {"WS_SOUTH": {"host": "127.0.0.1", "port": 11114, "tls": True}},
        },
    },
}


def write_config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "ae.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_caller_resolves_to_its_site(tmp_path: Path) -> None:
    config = AEConfig.load(write_config(tmp_path, TWO_SITES))
    caller = config.caller("CT_NORTH")
    assert caller is not None
    assert caller.site == "north"
    assert caller.listed
    assert caller.may("store")
    assert not caller.may("query")
    assert not caller.may("retrieve")


def test_caller_title_padding_ignored() -> None:
    config = AEConfig.model_validate(TWO_SITES)
    caller = config.caller("CT_SOUTH        ")
    assert caller is not None
    assert caller.ae_title == "CT_SOUTH"
    assert caller.site == "south"


def test_configured_titles_stripped() -> None:
    config = AEConfig.model_validate(
        {"ae_title": " ARCHIVE ", "sites": {"north": {"callers": {" CT ": ["store"]}}}}
    )
    assert config.ae_title == "ARCHIVE"
    assert config.known_callers() == ["CT"]


def test_unknown_caller_closed_is_none() -> None:
    config = AEConfig.model_validate(TWO_SITES)
    assert config.caller("STRANGER") is None


def test_unknown_caller_open_gets_default_site() -> None:
    config = AEConfig.model_validate({**TWO_SITES, "open": True, "default_site": "east"})
    caller = config.caller("STRANGER")
    assert caller is not None
    assert caller.site == "east"
    assert caller.permissions == ALL_PERMISSIONS
    assert not caller.listed


def test_open_keeps_listed_permissions() -> None:
    config = AEConfig.model_validate({**TWO_SITES, "open": True})
    caller = config.caller("CT_NORTH")
    assert caller is not None
    assert caller.permissions == frozenset({"store"})
    assert caller.listed


def test_destination_only_in_own_site() -> None:
    config = AEConfig.model_validate(TWO_SITES)
    own = config.destination("north", "WS_NORTH")
    assert own is not None
    assert (own.host, own.port, own.tls) == ("127.0.0.1", 11113, False)
    assert config.destination("south", "WS_NORTH") is None
    assert config.destination("west", "WS_NORTH") is None
    south = config.destination("south", "WS_SOUTH  ")
    assert south is not None
    assert south.tls


def test_defaults_fill_missing_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"sites": {}})
    config = AEConfig.load(path, ae_title="LOCAL", default_site="east")
    assert config.ae_title == "LOCAL"
    assert config.default_site == "east"
    assert not config.open


def test_file_values_override_defaults(tmp_path: Path) -> None:
    config = AEConfig.load(write_config(tmp_path, TWO_SITES), ae_title="LOCAL")
    assert config.ae_title == "ARCHIVE"


def test_empty_document_is_closed() -> None:
    config = AEConfig()
    assert config.ae_title == DEFAULT_AE_TITLE
    assert config.default_site == DEFAULT_SITE
    assert config.caller("ANY") is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"sites": {"a": {"callers": {"CT": ["store"]}}, "b": {"callers": {"CT": ["query"]}}}},
            "listed for sites 'a' and 'b'",
        ),
        ({"sites": {"North": {}}}, "site 'North' is invalid"),
        ({"sites": {"n": {"callers": {"CT": ["delete"]}}}}, "callers.CT"),
        ({"sites": {"n": {"callers": {"A" * 17: ["store"]}}}}, "AE title"),
        ({"sites": {"n": {"callers": {"BAD\\AE": ["store"]}}}}, "AE title"),
        ({"ae_title": "", "sites": {}}, "AE title"),
        ({"default_site": "a_b"}, "site 'a_b' is invalid"),
        ({"sites": {"n": {"destinations": {"WS": {"host": "h", "port": 0}}}}}, "port"),
        ({"sites": {"n": {"destinations": {"WS": {"host": "h", "port": 70000}}}}}, "port"),
        ({"sites": {"n": {"destinations": {"WS": {"port": 104}}}}}, "host"),
        ({"sites": {"n": {"destinations": {"WS": {"host": "h", "port": 1, "x": 1}}}}}, "x"),
        ({"sites": {"n": {"users": {}}}}, "users"),
        ({"site": {}}, "site"),
    ],
)
def test_invalid_document_rejected(tmp_path: Path, document: object, message: str) -> None:
    path = write_config(tmp_path, document)
    with pytest.raises(AEConfigError) as raised:
        AEConfig.load(path)
    assert str(path) in str(raised.value)
    assert "is invalid" in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize("text", ["{", "[]", '"sites"', "\xff"])
def test_unreadable_file_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "ae.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(AEConfigError, match=str(path)):
        AEConfig.load(path)


def test_missing_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(AEConfigError, match="unreadable"):
        AEConfig.load(path)
