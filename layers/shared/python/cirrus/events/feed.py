"""The change feed of each site: numbered changes (stored, deleted) in DynamoDB.

Writing. A writer takes sequence numbers from the site's counter (one atomic ``ADD``), then
saves each change in the same transaction as the index change it describes, so the feed and
the index never disagree. Two writers may save their changes out of order, so a reader can
meet a number that is handed out but not written yet. A number that the writer ends up not
using (the index write found the instance indexed already, or failed) is written as ``void``.
A writer that crashes leaves its number unwritten for good.

Reading. ``ChangeReader.read`` returns the changes after a cursor in order and stops before
a gap in the numbers, unless the gap is older than ``GAP_GRACE_SECONDS``, which it skips.
Every number below a change was handed out before that change's own number, so the gap is at
least as old as the change that follows it. A gap at the end of the feed is at least as old
as the counter's last allocation. A writer never saves a change more than
``WRITE_DEADLINE_SECONDS`` after taking its number (it takes a new one), so a consumer that
pages with the cursor misses no change while each DynamoDB request completes within the rest
of the grace period and the writers' clocks are within it.

Journal. A feed may have a journal (``ChangeJournal``) that receives every change and void
number once it is saved; the local stack keeps its feed there across restarts
(``cirrus.local.change_journal``).

Cost per change: one counter update (1 write unit) and one item in the index transaction
(2 write units, as every transactional write). All changes of a site share one partition,
which DynamoDB serves at up to 1,000 write units a second, and the counter is one item: about
1,000 allocations a second per site, where a batch of a series takes one allocation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PutError, PynamoDBException

from cirrus.errors import StoreUnavailableError
from cirrus.events.tables import COUNTER_SK, ChangeRecord, feed_pk
from cirrus.storage.keys import InstanceKey

logger = logging.getLogger(__name__)

STORED: Final = "stored"
DELETED: Final = "deleted"
VOID: Final = "void"
ACTIONS: Final = (STORED, DELETED)
# A writer takes a new number rather than save a change this long after taking the number.
WRITE_DEADLINE_SECONDS: Final = 15.0
# A reader skips a gap in the numbers once it is this old. It must exceed the write deadline,
# the longest DynamoDB request with its retries, and the clock difference of the hosts.
GAP_GRACE_SECONDS: Final = 120.0
MAX_PAGE: Final = 1000


@dataclass
class Ticket:
    """Sequence numbers ``first`` to ``first + count - 1`` of one site, taken at one time."""

    site: str
    first: int
    count: int
    allocated_at: float
    taken_monotonic: float
    used: set[int] = field(default_factory=set)
    # The change record built for each number, which the journal receives once it is saved.
    records: dict[int, ChangeRecord] = field(default_factory=dict)

    @property
    def numbers(self) -> range:
        return range(self.first, self.first + self.count)


class ChangeJournal(Protocol):
    """A copy of every saved change, from which a new changes table can be filled."""

    def append(self, records: Sequence[ChangeRecord]) -> None:
        """Write ``records`` durably; raise ``StoreUnavailableError`` when that fails."""


class ChangeFeed:
    """Hands out sequence numbers and builds the change records that index writes save."""

    def __init__(
        self,
        model: type[ChangeRecord],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        write_deadline: float = WRITE_DEADLINE_SECONDS,
        journal: ChangeJournal | None = None,
    ) -> None:
        self.model = model
        self._clock = clock
        self._monotonic = monotonic
        self._write_deadline = write_deadline
        self.journal = journal

    def allocate(self, site: str, count: int = 1) -> Ticket:
        """Take ``count`` new sequence numbers of ``site``; raise ``StoreUnavailableError``."""
        model = self.model
        now = self._clock()
        counter = model(feed_pk(site), COUNTER_SK)
        try:
            counter.update(actions=[model.last_sequence.add(count), model.allocated_at.set(now)])
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(
                f"change feed counter of site {site} failed: {type(exc).__name__}"
            ) from exc
        last = int(counter.last_sequence or 0)
        return Ticket(site, last - count + 1, count, now, self._monotonic())

    def fresh(self, ticket: Ticket) -> Ticket:
        """Return ``ticket``, or new numbers in its place once its write deadline has passed.

        The numbers of an expired ticket are written as void.
        """
        if self._monotonic() - ticket.taken_monotonic <= self._write_deadline:
            return ticket
        self.void(ticket)
        return self.allocate(ticket.site, ticket.count)

    def change(
        self,
        ticket: Ticket,
        index: int,
        action: str,
        key: InstanceKey,
        sop_class: str | None = None,
    ) -> tuple[ChangeRecord, Any]:
        """Return number ``index`` of ``ticket`` as a change record and its save condition."""
        if not 0 <= index < ticket.count:
            raise ValueError(f"ticket has {ticket.count} numbers; index {index} is out of range")
        model = self.model
        record = model(
            feed_pk(ticket.site),
            ticket.first + index,
            action=action,
            study=key.study,
            series=key.series,
            sop=key.sop,
            sop_class=sop_class or None,
            time=iso_time(self._clock()),
            allocated_at=ticket.allocated_at,
        )
        ticket.records[ticket.first + index] = record
        return record, model.pk.does_not_exist()

    def written(self, ticket: Ticket, indexes: Iterable[int]) -> None:
        """Note that the numbers at ``indexes`` of ``ticket`` were saved with their change.

        The saved changes go to the journal, if there is one. A journal that fails is logged
        and does not fail the write, because the change is in the table already.
        """
        numbers = [ticket.first + index for index in indexes]
        ticket.used.update(numbers)
        self._journal(
            ticket.site, [ticket.records[number] for number in numbers if number in ticket.records]
        )

    def _journal(self, site: str, records: list[ChangeRecord]) -> None:
        if self.journal is None or not records:
            return
        try:
            self.journal.append(records)
        except StoreUnavailableError as exc:
            logger.error(
                "change not journaled; a restart of the local stack loses it",
                extra={"site": site, "sequence": [int(r.sk) for r in records], "error": str(exc)},
            )

    def save_changes(self, site: str, action: str, keys: Sequence[InstanceKey]) -> int:
        """Save an ``action`` change of each of ``keys`` without an index write; return the count.

        For the local stack's start, which adds the changes that its journal lacks. Raises
        ``StoreUnavailableError`` when DynamoDB fails.
        """
        if not keys:
            return 0
        ticket = self.allocate(site, len(keys))
        saved: list[int] = []
        try:
            for index, key in enumerate(keys):
                record, condition = self.change(ticket, index, action, key)
                record.save(condition=condition)
                saved.append(index)
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(
                f"change feed of site {site} was not written: {type(exc).__name__}"
            ) from exc
        finally:
            # One journal write for the saved changes, rather than one per change.
            self.written(ticket, saved)
            self.void(ticket)
        return len(keys)

    def void(self, ticket: Ticket) -> None:
        """Write every number of ``ticket`` not noted as written as void, so readers pass it.

        Never raises: a number left unwritten is skipped by readers after the grace period.
        """
        model = self.model
        voided: list[ChangeRecord] = []
        for number in ticket.numbers:
            if number in ticket.used:
                continue
            record = model(
                feed_pk(ticket.site), number, action=VOID, allocated_at=ticket.allocated_at
            )
            try:
                record.save(condition=model.pk.does_not_exist())
                voided.append(record)
            except PutError as exc:
                if exc.cause_response_code != "ConditionalCheckFailedException":
                    _log_void_failure(ticket.site, number, exc)
            except (PynamoDBException, BotoCoreError) as exc:
                _log_void_failure(ticket.site, number, exc)
            ticket.used.add(number)
        self._journal(ticket.site, voided)


def _log_void_failure(site: str, number: int, exc: Exception) -> None:
    logger.warning(
        "change feed number left unwritten; readers skip it after the grace period",
        extra={"site": site, "sequence": number, "error": type(exc).__name__},
    )


@dataclass(frozen=True)
class Change:
    """One change of a site's feed."""

    sequence: int
    action: str
    study: str
    series: str
    sop: str
    time: str
    sop_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "sequence": self.sequence,
            "action": self.action,
            "time": self.time,
            "StudyInstanceUID": self.study,
            "SeriesInstanceUID": self.series,
            "SOPInstanceUID": self.sop,
        }
        if self.sop_class:
            body["SOPClassUID"] = self.sop_class
        return body


@dataclass(frozen=True)
class ChangePage:
    """The changes after a cursor, and the cursor to continue from.

    ``more`` is True when the page was cut at its limit, so the next one can be read at once;
    ``waiting`` is True when it stopped before a gap that a writer may still fill.
    """

    changes: list[Change]
    cursor: int
    more: bool = False
    waiting: bool = False

    def to_json(self, site: str) -> dict[str, Any]:
        return {
            "site": site,
            "changes": [change.to_json() for change in self.changes],
            "cursor": self.cursor,
            "more": self.more,
            "waiting": self.waiting,
        }


class CursorAheadError(ValueError):
    """A cursor above the highest number that a site's feed has taken."""


class ChangeReader:
    """Reads a site's feed in order with the gap rule of the module's docstring."""

    def __init__(
        self,
        model: type[ChangeRecord],
        clock: Callable[[], float] = time.time,
        grace: float = GAP_GRACE_SECONDS,
    ) -> None:
        self._model = model
        self._clock = clock
        self._grace = grace

    def read(self, site: str, since: int, limit: int = 100) -> ChangePage:
        """Return up to ``limit`` changes of ``site`` numbered above ``since``.

        Raises ``CursorAheadError`` when ``since`` is above the highest number the feed has
        taken. No page returns such a cursor, so it comes from an earlier feed of the site,
        such as a local feed before it was rebuilt. Raises ``StoreUnavailableError`` when
        DynamoDB fails.
        """
        if since < 0:
            raise ValueError(f"cursor {since} is invalid; give 0 or more")
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit {limit} is invalid; give 1 to {MAX_PAGE}")
        model = self._model
        pk = feed_pk(site)
        try:
            # The counter first: every number it has handed out is then judged by its time.
            counter = _get(model, pk, COUNTER_SK)
            last = int(counter.last_sequence or 0) if counter is not None else 0
            if since > last:
                raise CursorAheadError(
                    f"cursor {since} is above the last number {last} of the change feed of "
                    f"site {site}, so it does not come from this feed; read from 0 again, or "
                    f"from {last} to skip the changes before it"
                )
            records = model.query(
                pk, model.sk > since, consistent_read=True, page_size=min(limit + 20, MAX_PAGE)
            )
            return self._page(records, since, limit, counter)
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(
                f"change feed of site {site} could not be read: {type(exc).__name__}"
            ) from exc

    def _page(
        self,
        records: Iterable[ChangeRecord],
        since: int,
        limit: int,
        counter: ChangeRecord | None,
    ) -> ChangePage:
        now = self._clock()
        changes: list[Change] = []
        cursor = since
        for record in records:
            number = int(record.sk)
            if number > cursor + 1 and not self._old(record.allocated_at, now):
                return ChangePage(changes, cursor, waiting=True)
            if len(changes) == limit and record.action in ACTIONS:
                return ChangePage(changes, cursor, more=True)
            cursor = number
            if record.action in ACTIONS:
                changes.append(_change(record))
        last = int(counter.last_sequence or 0) if counter is not None else 0
        if last > cursor:
            allocated_at = counter.allocated_at if counter is not None else None
            if not self._old(allocated_at, now):
                return ChangePage(changes, cursor, waiting=True)
            cursor = last
        return ChangePage(changes, cursor)

    def _old(self, allocated_at: float | None, now: float) -> bool:
        # A record without a time was not written by this module; treat its gap as old.
        return allocated_at is None or now - float(allocated_at) >= self._grace


def _change(record: ChangeRecord) -> Change:
    return Change(
        sequence=int(record.sk),
        action=str(record.action),
        study=str(record.study or ""),
        series=str(record.series or ""),
        sop=str(record.sop or ""),
        time=str(record.time or ""),
        sop_class=record.sop_class,
    )


def _get(model: type[ChangeRecord], pk: str, sk: int) -> ChangeRecord | None:
    try:
        return model.get(pk, sk, consistent_read=True)
    except model.DoesNotExist:
        return None


def iso_time(seconds: float) -> str:
    """Return ``seconds`` since the epoch as ISO 8601 UTC with milliseconds."""
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
