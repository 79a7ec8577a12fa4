"""The change feed on moto's DynamoDB over HTTP: numbering, gaps, paging and site isolation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.audit import Actor
from cirrus.config import Settings
from cirrus.dicomweb.delete import DeleteTarget, delete_resource
from cirrus.events.feed import (
    GAP_GRACE_SECONDS,
    WRITE_DEADLINE_SECONDS,
    Change,
    ChangeFeed,
    ChangeReader,
    CursorAheadError,
    Ticket,
)
from cirrus.events.tables import ChangeRecord, bind_change_model
from cirrus.index.deletion import IndexDeleter
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from functions.ingest import handler as ingest_handler
from tests.integration.test_ingest import _instance, _queued_bodies


class _Clock:
    """The wall clock and the monotonic clock of the writers and the reader, moved by tests."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - 1_600_000_000.0


@pytest.fixture
def model(settings: Settings) -> type[ChangeRecord]:
    bound = bind_change_model(settings)
    assert bound is not None
    return bound


def _site() -> str:
    return f"s{uuid.uuid4().hex[:12]}"


def _key(site: str) -> InstanceKey:
    return InstanceKey(site, generate_uid(), generate_uid(), generate_uid())


def _write(feed: ChangeFeed, ticket: Ticket, site: str) -> list[int]:
    """Save every number of ``ticket`` as a stored change, as the index writer does."""
    numbers = []
    for index in range(ticket.count):
        record, condition = feed.change(ticket, index, "stored", _key(site))
        record.save(condition=condition)
        numbers.append(int(record.sk))
    feed.written(ticket, range(ticket.count))
    return numbers


def _feed(model: type[ChangeRecord], clock: _Clock) -> tuple[ChangeFeed, ChangeReader]:
    feed = ChangeFeed(model, clock=clock.wall, monotonic=clock.monotonic)
    return feed, ChangeReader(model, clock=clock.wall)


def test_numbers_increase_per_site(model: type[ChangeRecord]) -> None:
    feed = ChangeFeed(model)
    north, south = _site(), _site()
    assert feed.allocate(north).first == 1
    assert feed.allocate(north, 3).numbers == range(2, 5)
    assert feed.allocate(south).first == 1
    assert feed.allocate(north).first == 5


def test_pages_in_order(model: type[ChangeRecord]) -> None:
    clock = _Clock()
    feed, reader = _feed(model, clock)
    site = _site()
    written = _write(feed, feed.allocate(site, 5), site)
    first = reader.read(site, 0, limit=2)
    assert [c.sequence for c in first.changes] == written[:2]
    assert first.more
    assert first.cursor == 2
    second = reader.read(site, first.cursor, limit=10)
    assert [c.sequence for c in second.changes] == written[2:]
    assert not second.more
    assert not second.waiting
    assert reader.read(site, second.cursor).changes == []


def test_reader_stops_at_young_gap(model: type[ChangeRecord]) -> None:
    clock = _Clock()
    feed, reader = _feed(model, clock)
    site = _site()
    pending = feed.allocate(site)
    _write(feed, feed.allocate(site), site)
    page = reader.read(site, 0)
    assert page.changes == []
    assert page.cursor == 0
    assert page.waiting
    _write(feed, pending, site)
    assert [c.sequence for c in reader.read(site, 0).changes] == [1, 2]


def test_reader_skips_old_gap(model: type[ChangeRecord]) -> None:
    clock = _Clock()
    feed, reader = _feed(model, clock)
    site = _site()
    feed.allocate(site)  # a writer that crashed
    clock.now += 1
    _write(feed, feed.allocate(site), site)
    clock.now += GAP_GRACE_SECONDS
    page = reader.read(site, 0)
    assert [c.sequence for c in page.changes] == [2]
    assert page.cursor == 2


def test_reader_waits_at_young_tail(model: type[ChangeRecord]) -> None:
    clock = _Clock()
    feed, reader = _feed(model, clock)
    site = _site()
    _write(feed, feed.allocate(site), site)
    feed.allocate(site)
    page = reader.read(site, 0)
    assert [c.sequence for c in page.changes] == [1]
    assert page.cursor == 1
    assert page.waiting
    clock.now += GAP_GRACE_SECONDS
    tail = reader.read(site, 1)
    assert tail.cursor == 2
    assert not tail.waiting


def test_void_number_passed_at_once(model: type[ChangeRecord]) -> None:
    clock = _Clock()
    feed, reader = _feed(model, clock)
    site = _site()
    feed.void(feed.allocate(site))
    _write(feed, feed.allocate(site), site)
    page = reader.read(site, 0)
    assert [c.sequence for c in page.changes] == [2]
    assert not page.waiting


def test_expired_ticket_renewed(model: type[ChangeRecord]) -> None:
    clock = _Clock()
    feed, reader = _feed(model, clock)
    site = _site()
    ticket = feed.allocate(site)
    clock.now += WRITE_DEADLINE_SECONDS + 1
    renewed = feed.fresh(ticket)
    assert renewed.first == 2
    _write(feed, renewed, site)
    assert [c.sequence for c in reader.read(site, 0).changes] == [2]


def test_invalid_cursor_rejected(model: type[ChangeRecord]) -> None:
    reader = ChangeReader(model)
    with pytest.raises(ValueError, match="cursor"):
        reader.read("north", -1)
    with pytest.raises(ValueError, match="limit"):
        reader.read("north", 0, limit=0)
    with pytest.raises(ValueError, match="limit"):
        reader.read("north", 0, limit=1001)


def test_cursor_ahead_of_feed_rejected(model: type[ChangeRecord]) -> None:
    clock = _Clock()
    feed, reader = _feed(model, clock)
    site = _site()
    assert reader.read(site, 0).changes == []
    with pytest.raises(CursorAheadError, match=f"cursor 1 is above the last number 0 of .*{site}"):
        reader.read(site, 1)
    _write(feed, feed.allocate(site, 3), site)
    feed.allocate(site)  # taken, not written yet
    assert reader.read(site, 4).changes == []
    with pytest.raises(CursorAheadError, match="read from 0 again, or from 4"):
        reader.read(site, 5000)


@dataclass
class _Run:
    """Concurrent writers and one consumer that pages with the cursor.

    An operation is (name, writer, amount, seconds): a writer takes ``amount`` numbers, saves
    its numbers (after taking new ones past the write deadline), fails (voids them) or
    crashes. Then the clock moves ``seconds`` and the consumer reads a page of ``amount``.
    """

    feed: ChangeFeed
    reader: ChangeReader
    clock: _Clock
    site: str
    tickets: dict[int, Ticket] = field(default_factory=dict)
    written: set[int] = field(default_factory=set)
    seen: list[Change] = field(default_factory=list)
    cursor: int = 0

    def step(self, operation: tuple[str, int, int, int]) -> None:
        name, writer, amount, seconds = operation
        ticket = self.tickets.get(writer)
        if name == "take" and ticket is None:
            self.tickets[writer] = self.feed.allocate(self.site, amount)
        elif name == "write" and ticket is not None:
            ticket = self.feed.fresh(ticket)
            self.written.update(_write(self.feed, ticket, self.site))
            del self.tickets[writer]
        elif name == "fail" and ticket is not None:
            self.feed.void(ticket)
            del self.tickets[writer]
        elif name == "crash" and ticket is not None:
            del self.tickets[writer]
        self.clock.now += seconds
        self.read(amount)

    def read(self, limit: int) -> None:
        page = self.reader.read(self.site, self.cursor, limit)
        self.seen += page.changes
        self.cursor = page.cursor


_operations = st.lists(
    st.tuples(
        st.sampled_from(["take", "write", "fail", "crash"]),
        st.integers(0, 2),
        st.integers(1, 4),
        st.sampled_from([0, 5, GAP_GRACE_SECONDS + 10]),
    ),
    max_size=30,
)


@hypothesis_settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=_operations)
def test_consumer_misses_no_change(model: type[ChangeRecord], operations: list) -> None:
    clock = _Clock()
    feed, reader = _feed(model, clock)
    run = _Run(feed, reader, clock, _site())
    for operation in operations:
        run.step(operation)
    # The writers still holding numbers finish, then every gap grows old.
    for writer in list(run.tickets):
        run.step(("write", writer, 1, 0))
    clock.now += GAP_GRACE_SECONDS
    for _ in range(100):
        before = run.cursor
        run.read(7)
        if run.cursor == before:
            break
    sequences = [change.sequence for change in run.seen]
    assert sequences == sorted(set(sequences))
    assert set(sequences) == run.written


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


def test_index_and_feed_agree(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    keys = [
        archive_instance(services.store, "default", _instance(study, series)).key for _ in range(3)
    ]
    records = _queued_bodies(services)
    ingest_handler.handle({"Records": records}, None, services)
    ingest_handler.handle({"Records": records}, None, services)  # a redelivery
    deleter = IndexDeleter(services.index_model, services.change_feed)
    delete_resource(
        services.store,
        deleter,
        services.audit,
        services.events,
        DeleteTarget("default", study, series, keys[0].sop),
        Actor(principal=None, source_ip=None, user_agent=None),
        "request-1",
    )
    reader = services.change_reader
    assert reader is not None
    page = reader.read("default", 0)
    assert not page.waiting
    stored = [c for c in page.changes if c.action == "stored"]
    deleted = [c for c in page.changes if c.action == "deleted"]
    assert sorted(c.sop for c in stored) == sorted(key.sop for key in keys)
    assert [c.sop for c in deleted] == [keys[0].sop]
    assert page.changes[-1].action == "deleted"
    assert all(c.sop_class == "1.2.840.10008.5.1.4.1.1.2" for c in stored)


def test_site_reads_only_its_changes(services: Services) -> None:
    study = generate_uid()
    for site in ("north", "south"):
        archive_instance(services.store, site, _instance(study, generate_uid()))
    ingest_handler.handle({"Records": _queued_bodies(services)}, None, services)
    reader = services.change_reader
    assert reader is not None
    north = reader.read("north", 0).changes
    south = reader.read("south", 0).changes
    assert len(north) == 1
    assert len(south) == 1
    assert north[0].series != south[0].series
