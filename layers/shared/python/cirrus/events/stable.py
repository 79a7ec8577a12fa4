"""StudyStable: an event once a study has received no new instance for a quiet period.

Each arrival sets the study's ``last_arrival`` in its arrival record (``cirrus.events.tables``)
and marks a check as pending. The arrival that finds no check pending sends one to the stable
queue, delayed by the quiet period (SQS delays a message by 15 minutes at most). The checker
(the stable Lambda on AWS, a poller in the local stack) reads the record when the message
arrives. If the quiet period has not passed since the last arrival, it queues the check again
for the rest. Otherwise it clears ``pending`` with a write conditional on the arrival it read,
and the one checker whose write succeeds sends StudyStable, unless the study has no instances
left in the index (it was deleted during the quiet period). A redelivered message then finds
nothing pending and does nothing, and an instance that arrives later starts a new quiet period
and so a new StudyStable.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException, UpdateError

from cirrus.errors import StoreUnavailableError
from cirrus.events.model import CirrusEvent, study_stable
from cirrus.events.publisher import Publisher
from cirrus.events.tables import ArrivalRecord, arrival_pk
from cirrus.index.models import STUDY, IndexRecord, get_record, study_pk
from cirrus.storage.keys import validate_site

logger = logging.getLogger(__name__)

# SQS delays a message by at most 15 minutes; a longer quiet period takes several checks.
MAX_DELAY_SECONDS: Final = 900
CHECK_TYPE: Final = "study-stable-check"
_ATTEMPTS: Final = 5
_MAX_UID_LENGTH: Final = 64


@dataclass(frozen=True)
class StableCheck:
    """The message of one delayed check: the study to look at."""

    site: str
    study: str

    def body(self) -> str:
        return json.dumps({"type": CHECK_TYPE, "site": self.site, "study": self.study})

    @classmethod
    def from_body(cls, body: str) -> StableCheck:
        """Parse a check message; raise ``ValueError`` naming what is wrong."""
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError("stable check message is not JSON") from exc
        if not isinstance(data, dict) or data.get("type") != CHECK_TYPE:
            raise ValueError(f"message is not a {CHECK_TYPE} message")
        site, study = data.get("site"), data.get("study")
        if not isinstance(site, str) or not isinstance(study, str):
            raise ValueError("stable check message has no site or study")
        if not study or len(study) > _MAX_UID_LENGTH or not study.replace(".", "").isdigit():
            raise ValueError("stable check message has an invalid StudyInstanceUID")
        return cls(validate_site(site), study)


class StableQueue:
    """Sends delayed checks to the stable queue."""

    def __init__(self, sqs: Any, queue_name: str) -> None:
        self._sqs = sqs
        self._queue_name = queue_name
        self._url: str | None = None

    def send(self, check: StableCheck, delay: float) -> None:
        """Queue ``check`` after ``delay`` seconds (at most 15 minutes); raise on failure."""
        if self._url is None:
            self._url = str(self._sqs.get_queue_url(QueueName=self._queue_name)["QueueUrl"])
        seconds = max(0, min(MAX_DELAY_SECONDS, math.ceil(delay)))
        self._sqs.send_message(QueueUrl=self._url, MessageBody=check.body(), DelaySeconds=seconds)


class ArrivalTracker:
    """Records arrivals and queues the first check of each quiet period."""

    def __init__(
        self,
        model: type[ArrivalRecord],
        queue: StableQueue,
        quiet_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._model = model
        self._queue = queue
        self._quiet = quiet_seconds
        self._clock = clock

    def arrived(self, site: str, study: str, count: int = 1) -> None:
        """Note ``count`` new instances of a study now. Never raises; a failure is logged.

        A failure here costs the study its StudyStable event for this quiet period unless
        another instance arrives, never the store itself.
        """
        model = self._model
        now = self._clock()
        record = model(arrival_pk(site, study), 0)
        actions = [model.last_arrival.set(now), model.arrivals.add(count), model.pending.set(1)]
        try:
            # Model.update returns the new item only, but the old one shows whether a check
            # was pending, so the update goes through the model's connection (pynamodb 6.1).
            hash_key, range_key = record._get_hash_range_key_serialized_values()
            old = record._get_connection().update_item(
                hash_key, range_key=range_key, actions=actions, return_values="ALL_OLD"
            )
        except (PynamoDBException, BotoCoreError) as exc:
            logger.warning(
                "study arrival not recorded; no StudyStable for it",
                extra={"site": site, "study": study, "error": type(exc).__name__},
            )
            return
        attributes = (old or {}).get("Attributes") or {}
        if "pending" in attributes:
            return  # a check is queued already and finds this arrival
        try:
            self._queue.send(StableCheck(site, study), self._quiet)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "StudyStable check not queued; the next arrival queues one",
                extra={"site": site, "study": study, "error": type(exc).__name__},
            )
            self._unmark(record, now)

    def _unmark(self, record: ArrivalRecord, arrival: float) -> None:
        model = self._model
        try:
            record.update(actions=[model.pending.remove()], condition=model.last_arrival == arrival)
        except (PynamoDBException, BotoCoreError):
            pass  # a later arrival owns the record now


class StableChecker:
    """Handles the delayed checks: re-queues them, or sends StudyStable once per quiet period."""

    def __init__(
        self,
        arrivals: type[ArrivalRecord],
        index: type[IndexRecord],
        queue: StableQueue,
        publisher: Publisher,
        quiet_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._arrivals = arrivals
        self._index = index
        self._queue = queue
        self._publisher = publisher
        self._quiet = quiet_seconds
        self._clock = clock

    def check(self, check: StableCheck) -> CirrusEvent | None:
        """Run one check; return the StudyStable event it sent, or None.

        Raises ``StoreUnavailableError`` when DynamoDB or SQS fail, so that the message is
        delivered again.
        """
        try:
            for _ in range(_ATTEMPTS):
                done, event = self._try(check)
                if done:
                    return event
        except (PynamoDBException, BotoCoreError, ClientError) as exc:
            raise StoreUnavailableError(
                f"StudyStable check of study {check.study} failed: {type(exc).__name__}"
            ) from exc
        raise StoreUnavailableError(
            f"StudyStable check of study {check.study} kept conflicting with new arrivals"
        )

    def _try(self, check: StableCheck) -> tuple[bool, CirrusEvent | None]:
        model = self._arrivals
        try:
            record = model.get(arrival_pk(check.site, check.study), 0, consistent_read=True)
        except model.DoesNotExist:
            return True, None
        if not record.pending or record.last_arrival is None:
            return True, None  # handled by an earlier delivery
        last_arrival = float(record.last_arrival)
        remaining = last_arrival + self._quiet - self._clock()
        if remaining > 0:
            self._queue.send(check, remaining)
            return True, None
        arrivals = int(record.arrivals or 0)
        try:
            record.update(
                actions=[model.pending.remove(), model.arrivals.set(0)],
                condition=model.pending.exists() & (model.last_arrival == record.last_arrival),
            )
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return False, None
            raise
        event = self._event(check, arrivals, last_arrival)
        if event is None:
            logger.info(
                "study has no instances left; no StudyStable",
                extra={"site": check.site, "study": check.study, "arrivals": arrivals},
            )
            return True, None
        self._publisher.publish([event])
        return True, event

    def _event(self, check: StableCheck, arrivals: int, last_arrival: float) -> CirrusEvent | None:
        """Return the StudyStable event, or None when the study was deleted in its quiet period."""
        study = get_record(
            self._index, study_pk(check.site, check.study), STUDY, consistent_read=True
        )
        if study is None or int(study.instance_count or 0) <= 0:
            return None
        return study_stable(
            check.site,
            check.study,
            series_count=int(study.series_count or 0),
            instance_count=int(study.instance_count),
            modalities=sorted(study.modalities or ()),
            arrivals=arrivals,
            last_arrival=last_arrival,
            quiet_seconds=self._quiet,
        )
