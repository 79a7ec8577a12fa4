"""Object keys of the archive bucket.

Every key starts with the site, so IAM policies can scope a role to ``sites/{site}/`` and a
listing for one site never reads another's objects::

    sites/{site}/studies/{study}/series/{series}/instances/{sop}.dcm
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cirrus.errors import InvalidInstanceError

INSTANCE_SUFFIX: Final = ".dcm"

_SITE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# The write path takes only UIDs that follow PS3.5 9.1 (check_conformant_uid). Keys are checked
# more loosely: letters, '-' and '_' are safe in a key, so an object that an older version
# archived with such a UID is still indexed.
_KEY_SAFE_UID = re.compile(r"[0-9A-Za-z._-]{1,64}")
_CONFORMANT_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_INSTANCE_KEY = re.compile(
    r"sites/(?P<site>[^/]+)/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)"
    r"/instances/(?P<sop>[^/]+)\.dcm"
)


def validate_site(site: str) -> str:
    """Return ``site`` if it is a valid site identifier, else raise ``ValueError``."""
    if not _SITE.fullmatch(site):
        raise ValueError(f"site {site!r} is invalid; use 1 to 32 lowercase letters, digits and '-'")
    return site


def check_uid(keyword: str, uid: str) -> str:
    """Return ``uid`` if it can be part of a storage key, else raise ``InvalidInstanceError``."""
    if not uid:
        raise InvalidInstanceError(f"instance has no {keyword}; the sender must set it")
    if not _KEY_SAFE_UID.fullmatch(uid):
        raise InvalidInstanceError(
            f"{keyword} {uid!r} cannot be part of an object key; use at most 64 letters, "
            "digits, '.', '-' and '_'"
        )
    return uid


def check_conformant_uid(keyword: str, uid: str) -> str:
    """Return ``uid`` if it follows PS3.5 9.1, else raise ``InvalidInstanceError``."""
    if not uid:
        raise InvalidInstanceError(f"instance has no {keyword}; the sender must set it")
    if not is_conformant_uid(uid):
        raise InvalidInstanceError(
            f"{keyword} {uid!r} is not a valid UID; PS3.5 9.1 allows at most 64 characters, "
            "in components of digits separated by single '.', without leading zeros"
        )
    return uid


def is_conformant_uid(uid: str) -> bool:
    """Tell whether ``uid`` follows PS3.5 9.1.

    Components are digits, separated by single dots, none empty, none with a leading zero
    unless it is the single digit 0, and the whole UID has at most 64 characters.
    """
    return len(uid) <= 64 and _CONFORMANT_UID.fullmatch(uid) is not None


@dataclass(frozen=True)
class InstanceKey:
    """The identity of one stored instance: site and the three UIDs."""

    site: str
    study: str
    series: str
    sop: str

    @property
    def object_key(self) -> str:
        return (
            f"sites/{self.site}/studies/{self.study}/series/{self.series}"
            f"/instances/{self.sop}{INSTANCE_SUFFIX}"
        )

    @classmethod
    def parse(cls, object_key: str) -> InstanceKey:
        """Parse an object key of the archive layout, or raise ``ValueError``."""
        match = _INSTANCE_KEY.fullmatch(object_key)
        if match is None:
            raise ValueError(f"object key {object_key!r} is not an archived instance")
        return cls(**match.groupdict())


def site_prefix(site: str) -> str:
    """Return the key prefix of every object of ``site``."""
    return f"sites/{validate_site(site)}/"
