"""One storage key per SOP Instance UID and site.

Storage keys contain the study and series UIDs, so an instance sent again with other study or
series UIDs would otherwise be stored a second time under a second key. Before the write path
stores an instance, it claims the instance's SOP Instance UID for its key. When another key
has the claim, the store fails with ``ConflictError``. Ingest records the claim of every indexed
object too, so a rebuilt index has them all.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PutError, PynamoDBException

from cirrus.errors import ConflictError, StoreUnavailableError
from cirrus.index.models import IndexRecord, get_record
from cirrus.storage.keys import InstanceKey

logger = logging.getLogger(__name__)

CLAIM: Final = "CLAIM"


def claim_pk(site: str, sop: str) -> str:
    return f"{site}#SOP#{sop}"


def claim_record(model: type[IndexRecord], key: InstanceKey) -> IndexRecord:
    """Return the record that claims ``key.sop`` for ``key``.

    It has no ``by-level`` keys: nothing lists claims, and one partition key for every claim
    of a site would take every instance's write in a single index partition.
    """
    return model(
        claim_pk(key.site, key.sop),
        CLAIM,
        level=CLAIM,
        site=key.site,
        object_key=key.object_key,
    )


def claim_condition(model: type[IndexRecord], key: InstanceKey) -> Any:
    """Return the condition of writing a claim: none exists yet, or it is for ``key``."""
    return model.pk.does_not_exist() | (model.object_key == key.object_key)


class InstanceClaims:
    def __init__(self, model: type[IndexRecord]) -> None:
        self._model = model

    def claim(self, key: InstanceKey) -> None:
        """Claim ``key.sop`` for ``key``; raise ``ConflictError`` if another key has the claim.

        Claiming the same key again succeeds, so a resent instance replaces the stored one.
        """
        try:
            claim_record(self._model, key).save(condition=claim_condition(self._model, key))
        except PutError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise StoreUnavailableError(f"claim of {key.sop} failed: {exc}") from exc
            raise self._conflict(key) from exc
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(f"claim of {key.sop} failed: {exc}") from exc

    def _conflict(self, key: InstanceKey) -> ConflictError:
        existing = get_record(self._model, claim_pk(key.site, key.sop), CLAIM, consistent_read=True)
        held_by = (
            InstanceKey.parse(existing.object_key) if existing and existing.object_key else None
        )
        where = f"study {held_by.study}, series {held_by.series}" if held_by else "another series"
        return ConflictError(
            f"SOP Instance UID {key.sop} is already stored in {where}; send it with those "
            "UIDs to replace it, or give the new instance a new SOP Instance UID"
        )
