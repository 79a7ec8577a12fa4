"""Wiring of adapters and domain services from settings, shared by every entry point.

The index writer and the StudyStable adapters are imported when first built, because the
DICOMweb function never builds them and its cold start would load them for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from cirrus.audit import AuditLog
from cirrus.audit_table import bind_audit_model
from cirrus.aws import AwsClients
from cirrus.config import Settings
from cirrus.events.feed import ChangeFeed, ChangeReader
from cirrus.events.publisher import EventPublisher, NoPublisher, Publisher
from cirrus.events.tables import bind_arrival_model, bind_change_model
from cirrus.index.claims import InstanceClaims
from cirrus.index.models import IndexRecord, bind_index_model
from cirrus.index.reader import IndexReader
from cirrus.query.qido import QidoService
from cirrus.storage.objects import ObjectStore
from cirrus.storage.transfers import TransferStore

if TYPE_CHECKING:
    from cirrus.events.stable import ArrivalTracker, StableQueue
    from cirrus.index.writer import IndexWriter


@dataclass
class Services:
    """The adapters of one deployment, built on first use and shared by threads."""

    settings: Settings

    @cached_property
    def clients(self) -> AwsClients:
        return AwsClients(self.settings)

    @cached_property
    def store(self) -> ObjectStore:
        return ObjectStore(self.clients.s3, self.settings.bucket, self.settings.kms_key_id)

    @cached_property
    def transfers(self) -> TransferStore:
        """The transfer objects of large DICOMweb requests, presigned with the S3 presigner."""
        return TransferStore(
            self.clients.s3,
            self.settings.bucket,
            self.settings.kms_key_id,
            self.clients.s3_presigner,
        )

    @cached_property
    def index_model(self) -> type[IndexRecord]:
        return bind_index_model(self.settings)

    @cached_property
    def index_writer(self) -> IndexWriter:
        from cirrus.index.writer import IndexWriter

        return IndexWriter(self.index_model, self.store, self.change_feed)

    @cached_property
    def index_reader(self) -> IndexReader:
        return IndexReader(self.index_model, self.store)

    @cached_property
    def claims(self) -> InstanceClaims:
        return InstanceClaims(self.index_model)

    @cached_property
    def qido(self) -> QidoService:
        return QidoService(self.index_model)

    @cached_property
    def audit(self) -> AuditLog:
        """The audit trail, whose AuditSourceID is the deployment's name."""
        return AuditLog(bind_audit_model(self.settings), self.settings.deployment)

    @cached_property
    def change_feed(self) -> ChangeFeed | None:
        """The writer side of the change feed, or None without a changes table."""
        model = bind_change_model(self.settings)
        return ChangeFeed(model) if model is not None else None

    @cached_property
    def change_reader(self) -> ChangeReader | None:
        model = bind_change_model(self.settings)
        return ChangeReader(model) if model is not None else None

    @cached_property
    def events(self) -> Publisher:
        """The EventBridge publisher, or one that sends nothing without an event bus."""
        if not self.settings.event_bus:
            return NoPublisher()
        return EventPublisher(self.clients.events, self.settings.event_bus)

    @cached_property
    def stable_queue(self) -> StableQueue | None:
        from cirrus.events.stable import StableQueue

        queue = self.settings.stable_queue
        return StableQueue(self.clients.sqs, queue) if queue else None

    @cached_property
    def arrivals(self) -> ArrivalTracker | None:
        """The arrival tracker of StudyStable, or None without its table or queue."""
        from cirrus.events.stable import ArrivalTracker

        model = bind_arrival_model(self.settings)
        if model is None or self.stable_queue is None:
            return None
        return ArrivalTracker(model, self.stable_queue, self.settings.stable_after_seconds)
