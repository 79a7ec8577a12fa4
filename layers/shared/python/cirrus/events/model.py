"""The Cirrus events sent to EventBridge, and their detail.

Every event has the source ``cirrus.pacs`` and one of the detail types below. The detail names
the site, the UIDs, the SOP class and modality, sizes, counts and times, and never patient
names, IDs or other demographics: a consumer that needs them queries DICOMweb with the UIDs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from cirrus.events.feed import iso_time
from cirrus.storage.keys import InstanceKey

SOURCE: Final = "cirrus.pacs"
INSTANCE_STORED: Final = "InstanceStored"
INSTANCE_DELETED: Final = "InstanceDeleted"
INSTANCE_REJECTED: Final = "InstanceRejected"
STUDY_STABLE: Final = "StudyStable"
DETAIL_TYPES: Final = (INSTANCE_STORED, INSTANCE_DELETED, INSTANCE_REJECTED, STUDY_STABLE)
# A rejection's reason is cut to this many characters.
MAX_REASON_LENGTH: Final = 1024


@dataclass(frozen=True)
class CirrusEvent:
    """One event: its detail type and its detail, a JSON object."""

    detail_type: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def site(self) -> str | None:
        site = self.detail.get("site")
        return str(site) if site is not None else None

    def entry(self, bus: str) -> dict[str, Any]:
        """Return the PutEvents entry of the event on ``bus``."""
        return {
            "Source": SOURCE,
            "DetailType": self.detail_type,
            "Detail": json.dumps(self.detail, separators=(",", ":"), sort_keys=True),
            "EventBusName": bus,
        }


def _now() -> str:
    return iso_time(time.time())


def _uids(key: InstanceKey) -> dict[str, Any]:
    return {
        "site": key.site,
        "StudyInstanceUID": key.study,
        "SeriesInstanceUID": key.series,
        "SOPInstanceUID": key.sop,
    }


def instance_stored(
    key: InstanceKey,
    sop_class: str | None,
    modality: str | None,
    size: int | None,
    outcome: str,
) -> CirrusEvent:
    """Return the event of an instance that the index now has (``outcome`` created or updated)."""
    detail = {
        **_uids(key),
        "SOPClassUID": sop_class,
        "Modality": modality,
        "size": size,
        "outcome": outcome,
        "time": _now(),
    }
    return CirrusEvent(INSTANCE_STORED, detail)


def instance_deleted(key: InstanceKey) -> CirrusEvent:
    """Return the event of an instance removed from the archive and the index."""
    return CirrusEvent(INSTANCE_DELETED, {**_uids(key), "time": _now()})


def instance_rejected(
    site: str | None,
    transport: str,
    status: str,
    reason: str,
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    sop_class: str | None = None,
) -> CirrusEvent:
    """Return the event of an instance that was not stored.

    ``transport`` is DIMSE, STOW-RS or ingest, and ``status`` the DICOM status (``0xA900``) or,
    for ingest, ``invalid``. The reason is cut to ``MAX_REASON_LENGTH`` characters.
    """
    detail = {
        "site": site,
        "transport": transport,
        "status": status,
        "reason": reason[:MAX_REASON_LENGTH],
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": sop,
        "SOPClassUID": sop_class,
        "time": _now(),
    }
    return CirrusEvent(INSTANCE_REJECTED, detail)


def study_stable(
    site: str,
    study: str,
    *,
    series_count: int,
    instance_count: int,
    modalities: list[str],
    arrivals: int,
    last_arrival: float,
    quiet_seconds: int,
) -> CirrusEvent:
    """Return the event of a study that received no instance for ``quiet_seconds``."""
    detail = {
        "site": site,
        "StudyInstanceUID": study,
        "series": series_count,
        "instances": instance_count,
        "ModalitiesInStudy": sorted(modalities),
        "arrivals": arrivals,
        "lastArrival": iso_time(last_arrival),
        "quietSeconds": quiet_seconds,
        "time": _now(),
    }
    return CirrusEvent(STUDY_STABLE, detail)
