"""Wiring of adapters and domain services from settings, shared by every entry point."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from cirrus.audit import AuditLog
from cirrus.audit_table import bind_audit_model
from cirrus.aws import AwsClients
from cirrus.config import Settings
from cirrus.index.claims import InstanceClaims
from cirrus.index.models import IndexRecord, bind_index_model
from cirrus.index.reader import IndexReader
from cirrus.index.writer import IndexWriter
from cirrus.query.qido import QidoService
from cirrus.storage.objects import ObjectStore


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
    def index_model(self) -> type[IndexRecord]:
        return bind_index_model(self.settings)

    @cached_property
    def index_writer(self) -> IndexWriter:
        return IndexWriter(self.index_model, self.store)

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
