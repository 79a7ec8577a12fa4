"""Which peers may use the gateway, for which site, and where C-MOVE may send.

The configuration is a JSON document, read once at start::

    {
      "ae_title": "CIRRUS",
      "open": false,
      "sites": {
        "north": {
          "callers": {"CT_NORTH": ["store"], "WS_NORTH": ["store", "query", "retrieve"]},
          "destinations": {"WS_NORTH": {"host": "10.0.0.5", "port": 11112}}
        }
      }
    }

Each calling AE title belongs to one site, so the site of every association follows from the
caller. A C-MOVE destination is looked up in the caller's own site only, so a site can send
images only to its own workstations. With ``open`` set, callers that no site lists are
accepted as callers of the default site with every permission; the local stack starts that way
and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cirrus.config import DEFAULT_AE_TITLE, DEFAULT_SITE, validate_ae_title
from cirrus.storage.keys import validate_site

Permission = Literal["store", "query", "retrieve"]
ALL_PERMISSIONS: Final[frozenset[Permission]] = frozenset({"store", "query", "retrieve"})


class AEConfigError(ValueError):
    """The AE configuration is not valid JSON or breaks one of its rules."""


class Destination(BaseModel):
    """A C-MOVE destination: the address of a Storage SCP."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False


class SiteAEs(BaseModel):
    """The callers of one site with their permissions, and the site's C-MOVE destinations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    callers: dict[str, frozenset[Permission]] = Field(default_factory=dict)
    destinations: dict[str, Destination] = Field(default_factory=dict)

    @field_validator("callers", "destinations", mode="before")
    @classmethod
    def _strip_titles(cls, value: object) -> object:
        if isinstance(value, dict):
            return {validate_ae_title(str(title)): item for title, item in value.items()}
        return value


@dataclass(frozen=True)
class Caller:
    """The calling AE of one association, as the configuration resolves it."""

    ae_title: str
    site: str
    permissions: frozenset[Permission]
    listed: bool

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions


class AEConfig(BaseModel):
    """The gateway's own AE title and its peers, site by site."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ae_title: str = DEFAULT_AE_TITLE
    open: bool = False
    default_site: str = DEFAULT_SITE
    sites: dict[str, SiteAEs] = Field(default_factory=dict)

    @field_validator("ae_title")
    @classmethod
    def _check_title(cls, value: str) -> str:
        return validate_ae_title(value)

    @field_validator("default_site")
    @classmethod
    def _check_default_site(cls, value: str) -> str:
        return validate_site(value)

    @field_validator("sites")
    @classmethod
    def _check_sites(cls, value: dict[str, SiteAEs]) -> dict[str, SiteAEs]:
        for site in value:
            validate_site(site)
        return value

    @model_validator(mode="after")
    def _one_site_per_caller(self) -> AEConfig:
        seen: dict[str, str] = {}
        for site, aes in self.sites.items():
            for title in aes.callers:
                if title in seen:
                    raise ValueError(
                        f"calling AE title {title!r} is listed for sites {seen[title]!r} and "
                        f"{site!r}; give each caller one site"
                    )
                seen[title] = site
        return self

    def caller(self, calling_ae_title: str) -> Caller | None:
        """Resolve a calling AE title; None when it is unknown and the gateway is not open."""
        title = calling_ae_title.strip(" ")
        for site, aes in self.sites.items():
            permissions = aes.callers.get(title)
            if permissions is not None:
                return Caller(title, site, permissions, listed=True)
        if self.open:
            return Caller(title, self.default_site, ALL_PERMISSIONS, listed=False)
        return None

    def destination(self, site: str, ae_title: str) -> Destination | None:
        """Return the C-MOVE destination ``ae_title`` of ``site``, or None when it has none."""
        aes = self.sites.get(site)
        if aes is None:
            return None
        return aes.destinations.get(ae_title.strip(" "))

    def known_callers(self) -> list[str]:
        return [title for aes in self.sites.values() for title in aes.callers]

    @classmethod
    def load(cls, path: Path, **defaults: object) -> AEConfig:
        """Read the configuration from a JSON file; ``defaults`` fill top-level keys it lacks."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AEConfigError(f"AE configuration {path} is unreadable: {exc}") from exc
        if not isinstance(document, dict):
            raise AEConfigError(f"AE configuration {path} must be a JSON object")
        try:
            return cls.model_validate({**defaults, **document})
        except ValidationError as exc:
            raise AEConfigError(f"AE configuration {path} is invalid: {exc}") from exc
