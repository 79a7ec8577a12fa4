"""``cirrus deidentify``: store de-identified copies of a study's instances in another site.

Each copy goes through the archive's write path (``cirrus.archive.archive_instance``) with the
SOP Instance UID claims, as a C-STORE or STOW-RS would, and is indexed from the object-created
notification. The source site is only read.
"""

from __future__ import annotations

import logging
from typing import Final

from cirrus.archive import archive_instance
from cirrus.deid import Deidentifier
from cirrus.errors import ConflictError, InvalidInstanceError
from cirrus.index.claims import InstanceClaims
from cirrus.operations.export import (
    FAILED,
    ExportError,
    InstanceResult,
    Report,
    read_instances,
    study_keys,
)
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

STORED: Final = "stored"


def deidentify_study(
    store: ObjectStore,
    claims: InstanceClaims | None,
    source_site: str,
    target_site: str,
    study_uid: str,
    deidentifier: Deidentifier,
    report: Report,
) -> dict[str, int]:
    """Archive a de-identified copy of each instance of the study in ``target_site``.

    ``store`` must send the object-created notification of what it writes (the bucket does so
    on AWS). Returns the count of each result. Raises ``ExportError`` when the sites are the
    same or the study is not found, and ``StoreUnavailableError`` when S3 or DynamoDB fail.
    """
    if source_site == target_site:
        raise ExportError(f"source and target site are both {source_site!r}; name another site")
    keys = study_keys(store, source_site, study_uid)
    counts = {STORED: 0, FAILED: 0}
    for key, part10 in read_instances(store, keys, deidentifier):
        result = _store_copy(store, claims, target_site, key, part10)
        counts[result.result] += 1
        report(result)
    return counts


def _store_copy(
    store: ObjectStore,
    claims: InstanceClaims | None,
    target_site: str,
    key: str,
    part10: bytes | InstanceResult,
) -> InstanceResult:
    if isinstance(part10, InstanceResult):
        return part10
    try:
        archived = archive_instance(store, target_site, part10, claims=claims)
    except (InvalidInstanceError, ConflictError) as exc:
        return InstanceResult(key, FAILED, f"not archived: {exc}")
    return InstanceResult(key, STORED, archived.key.object_key)
