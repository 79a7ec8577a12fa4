"""InstanceRejected events of the three places where an instance can be turned away."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cirrus.events.model import CirrusEvent, instance_rejected
from cirrus.storage.keys import InstanceKey

if TYPE_CHECKING:
    from cirrus.dicomweb.stow import Failure

DIMSE: str = "DIMSE"
STOW_RS: str = "STOW-RS"
INGEST: str = "ingest"


def stow_rejections(site: str, failures: Iterable[Failure]) -> list[CirrusEvent]:
    """Return one event per STOW-RS part that was not stored, with its Failure Reason."""
    return [
        instance_rejected(
            site,
            STOW_RS,
            f"0x{int(failure.reason):04X}",
            failure.message,
            study=failure.study_instance_uid,
            series=failure.series_instance_uid,
            sop=failure.sop_instance_uid,
            sop_class=failure.sop_class_uid,
        )
        for failure in failures
    ]


def cstore_rejection(
    site: str | None,
    status: int,
    reason: str,
    *,
    study: str | None,
    series: str | None,
    sop: str | None,
    sop_class: str | None,
) -> CirrusEvent:
    """Return the event of a C-STORE that failed with the DICOM ``status``."""
    return instance_rejected(
        site,
        DIMSE,
        f"0x{status:04X}",
        reason,
        study=study,
        series=series,
        sop=sop,
        sop_class=sop_class,
    )


def ingest_rejection(object_key: str, reason: str) -> CirrusEvent:
    """Return the event of an archived object that ingest cannot index."""
    try:
        key: InstanceKey | None = InstanceKey.parse(object_key)
    except ValueError:
        key = None
    if key is None:
        return instance_rejected(None, INGEST, "invalid", reason)
    return instance_rejected(
        key.site,
        INGEST,
        "invalid",
        reason,
        study=key.study,
        series=key.series,
        sop=key.sop,
    )
