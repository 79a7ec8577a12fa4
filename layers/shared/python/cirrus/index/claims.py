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
from pynamodb.exceptions import DeleteError, PutError, PynamoDBException

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

    def claim(self, key: InstanceKey) -> bool:
        """Claim ``key.sop`` for ``key``; raise ``ConflictError`` if another key has the claim.

        Claiming the same key again succeeds, so a resent instance replaces the stored one.
        Returns True when this call created the claim, and False when ``key`` had it already.
        """
        record = claim_record(self._model, key)
        if self._save(record, key, self._model.pk.does_not_exist()):
            return True
        if self._save(record, key, self._model.object_key == key.object_key):
            return False
        raise self._conflict(key)

    def record(self, key: InstanceKey) -> None:
        """Claim ``key.sop`` for ``key`` whether or not ``key`` has it already, in one write.

        Ingest uses it, because it does not need to know whether the claim is new. ``claim``
        takes two writes for a claim that exists, and a failed conditional write costs a write
        unit too. Raises ``ConflictError`` if another key has the claim.
        """
        record = claim_record(self._model, key)
        if not self._save(record, key, claim_condition(self._model, key)):
            raise self._conflict(key)

    def release(self, key: InstanceKey) -> None:
        """Delete the claim that ``claim`` created for ``key``, because its write failed.

        Without this, a failed write would keep the SOP Instance UID claimed for a key that has
        no object, and the instance sent again under other study or series UIDs would be
        rejected. A claim of another key is left alone. A failure is logged, not raised,
        because the caller is already handling the failed write.
        """
        condition = self._model.object_key == key.object_key
        try:
            claim_record(self._model, key).delete(condition=condition)
        except DeleteError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                _log_not_released(key, exc)
        except (PynamoDBException, BotoCoreError) as exc:
            _log_not_released(key, exc)

    @staticmethod
    def _save(record: IndexRecord, key: InstanceKey, condition: Any) -> bool:
        """Save ``record`` if ``condition`` holds; return whether it held."""
        try:
            record.save(condition=condition)
        except PutError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise StoreUnavailableError(f"claim of {key.sop} failed: {exc}") from exc
            return False
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(f"claim of {key.sop} failed: {exc}") from exc
        return True

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


def _log_not_released(key: InstanceKey, exc: Exception) -> None:
    # NOTE: the claim then stays, so the SOP Instance UID can be stored only with the study
    # and series UIDs of ``key``.
    logger.warning(
        "claim of a failed write not released",
        extra={"object_key": key.object_key, "error": type(exc).__name__},
    )
