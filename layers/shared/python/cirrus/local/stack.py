"""The local stack behind ``cirrus dev``: moto, the gateway, DICOMweb, the viewer and ingest.

Each component runs the code its AWS counterpart runs: the gateway as in its container, the
DICOMweb and ingest Lambda handlers behind local adapters, DynamoDB, KMS, SQS and S3 on moto.
Archive objects are files in the data folder instead of moto's S3 (``cirrus.local.datadir``),
which keeps them on disk rather than in memory and spares each instance two S3 requests. So
are the transfer objects of large DICOMweb requests, served by signed URLs on the HTTP port
(``cirrus.local.transfers``). Audit records go to a journal in the data folder, then to
moto's audit table, and each start writes the journal back into the table
(``cirrus.local.audit_journal``). The change feed is kept the same way
(``cirrus.local.change_journal``). While the stack runs, its data folder names the moto
endpoint for the operator commands (``cirrus.local.endpoints``). The HTTP port also serves the
web viewer's built files at / (``cirrus.local.viewer``).
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cirrus.audit import AuditLog
from cirrus.audit_table import bind_audit_model
from cirrus.config import (
    DEFAULT_AE_TITLE,
    DEFAULT_SITE,
    DEFAULT_STABLE_AFTER_SECONDS,
    ResourceNames,
    Settings,
)
from cirrus.dicomweb.bundle_refresh import BundleRefresher
from cirrus.dicomweb.bundles import MetadataBundles
from cirrus.errors import StoreUnavailableError
from cirrus.events.feed import ChangeFeed
from cirrus.events.publisher import NoPublisher
from cirrus.events.tables import bind_change_model
from cirrus.gateway.aeconfig import AEConfig, AEConfigError
from cirrus.gateway.limits import GatewayLimits
from cirrus.gateway.tls import TLSConfig, TLSConfigError
from cirrus.index.writer import IndexWriter
from cirrus.lifecycle.bucket import apply_lifecycle_rules
from cirrus.lifecycle.rules import LifecycleRules
from cirrus.local.audit_journal import (
    JOURNAL_FILE,
    FileAuditJournal,
    TableWriter,
    restore_journal,
)
from cirrus.local.change_journal import JOURNAL_FILE as CHANGE_JOURNAL_FILE
from cirrus.local.change_journal import (
    FileChangeJournal,
    RestoredFeed,
    journal_counters,
    reconcile_feed,
    restore_change_journal,
)
from cirrus.local.datadir import (
    DataFolderInUseError,
    DataFolderLock,
    FolderObjectStore,
    QueueNotifier,
    remove_spool_leftovers,
    saved_objects,
)
from cirrus.local.endpoints import remove_endpoints, write_endpoints
from cirrus.local.event_pollers import start_event_pollers
from cirrus.local.http import BODY_TIMEOUT_SECONDS, IDLE_TIMEOUT_SECONDS, STAGE
from cirrus.local.moto_process import LOOPBACK, MotoProcess, start_moto, use_local_credentials
from cirrus.local.poller import (
    INGEST_BATCHING_WINDOW_SECONDS,
    INGEST_STREAM_GAP_SECONDS,
    IngestPoller,
)
from cirrus.local.rebuild import rebuild_index
from cirrus.local.resources import create_resources
from cirrus.local.sigv4 import (
    LocalAuthentication,
    LocalCredential,
    SigV4Verifier,
    closed_credentials,
)
from cirrus.local.transfers import (
    SWEEP_SECONDS,
    TRANSFERS_FOLDER,
    FolderTransferStore,
    TransferSite,
)
from cirrus.local.viewer import BUILD_COMMAND, INDEX_FILE, ViewerSite, built_viewer, viewer_config
from cirrus.logs import configure_console_logging, use_console_format
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey

logger = logging.getLogger("cirrus.local")

OBJECTS_FOLDER: Final = "objects"
# The gateway's spool (``cirrus.gateway.spool``) in the data folder, so that the files of a
# gateway that was killed are deleted at the next start.
SPOOL_FOLDER: Final = "spool"
_REBUILD_TIMEOUT_SECONDS: Final = 3600


class StartError(Exception):
    """A component cannot start: a port is in use, the data folder is unusable, and so on."""


@dataclass
class LocalStackConfig:
    host: str = LOOPBACK
    dicom_port: int = 11112
    http_port: int = 8080
    ae_title: str = DEFAULT_AE_TITLE
    data_dir: Path = field(default_factory=lambda: Path(".cirrus"))
    site: str = DEFAULT_SITE
    cors_origins: tuple[str, ...] = ()
    # The gateway's AE configuration file. Without one, the gateway is open: it accepts every
    # calling AE title for ``site``.
    ae_config: Path | None = None
    # The DICOM TLS listener, on a second port next to ``dicom_port``; None for none.
    tls: TLSConfig | None = None
    # Gateway processes on the DICOM port (``cirrus.gateway.workers``). With 1, the gateway
    # runs in this process.
    gateway_workers: int = 1
    # The DICOMweb access document (``cirrus.access``) and the local SigV4 credentials
    # (``cirrus.local.sigv4``). Without them DICOMweb is open: unsigned requests have every
    # action on ``site``.
    access_file: Path | None = None
    credentials_file: Path | None = None
    # Seconds an HTTP connection may stay silent, and seconds to receive a request body
    # (``cirrus.local.http``).
    http_idle_timeout: float = IDLE_TIMEOUT_SECONDS
    http_body_timeout: float = BODY_TIMEOUT_SECONDS
    # The web viewer's build folder (``viewer/dist``), served at / beside DICOMweb
    # (``cirrus.local.viewer``). Without one, or without its index.html, / serves a page with
    # the command that builds the viewer.
    viewer_dir: Path | None = None
    # Tiering rules written to moto's bucket configuration (``cirrus.lifecycle.bucket``).
    lifecycle_rules: LifecycleRules | None = None
    # Seconds without a new instance before a study's StudyStable event.
    stable_after_seconds: int = DEFAULT_STABLE_AFTER_SECONDS

    def gateway_config(self) -> AEConfig:
        """Return the AE configuration; raise ``AEConfigError`` when its file is invalid."""
        if self.ae_config is None:
            return AEConfig(ae_title=self.ae_title, open=True, default_site=self.site)
        return AEConfig.load(self.ae_config, ae_title=self.ae_title, default_site=self.site)


class LocalStack:
    def __init__(self, config: LocalStackConfig) -> None:
        self.config = config
        self.settings: Settings | None = None
        self.services: Services | None = None
        self._moto: MotoProcess | None = None
        self._lock = DataFolderLock(config.data_dir)
        self._poller: IngestPoller | None = None
        self._event_pollers: list[IngestPoller] = []
        self._gateway: Any = None
        self._http: Any = None
        self._audit_table: TableWriter | None = None
        # Instances of the data folder that the start's rebuild could not index.
        self._unindexed: set[InstanceKey] = set()
        # Undo the console format given to the handlers' powertools loggers, at stop.
        self._restore_formats: list[Callable[[], None]] = []

    @property
    def dicom_port(self) -> int:
        return int(self._gateway.port)

    @property
    def tls_port(self) -> int | None:
        """The bound port of the DICOM TLS listener, or None without one."""
        port = self._gateway.tls_port
        return None if port is None else int(port)

    @property
    def http_port(self) -> int:
        return int(self._http.port)

    @property
    def dicomweb_url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}/dicomweb"

    @property
    def viewer_url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}/"

    def start(self) -> None:
        """Start every component; return once all accept requests and the index is rebuilt."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        config = self.config
        # Check the ports before the slow steps, so that a port in use fails at once.
        ports = [("DICOM", config.dicom_port), ("HTTP", config.http_port)]
        if config.tls is not None:
            ports.append(("DICOM TLS", config.tls.port))
        for name, port in ports:
            _check_port_free(name, config.host, port)
        try:
            gateway_config = config.gateway_config()
            if config.tls is not None:
                config.tls.server_context()
            credentials = closed_credentials(config.access_file, config.credentials_file)
        except (AEConfigError, TLSConfigError, ValueError) as exc:
            raise StartError(str(exc)) from exc
        try:
            self._lock.acquire()
        except DataFolderInUseError as exc:
            raise StartError(str(exc)) from exc
        except OSError as exc:
            raise StartError(f"data folder {config.data_dir} is unusable: {exc}") from exc
        use_local_credentials()
        self._moto = start_moto()
        settings = create_resources(
            Settings.for_names(
                ResourceNames(),
                endpoint_url=self._moto.endpoint_url,
                json_endpoint_url=self._moto.front_url,
                default_site=config.site,
                cors_origins=config.cors_origins,
                access_file=str(config.access_file) if config.access_file else None,
                stable_after_seconds=config.stable_after_seconds,
            )
        )
        self.settings = settings
        logger.info("object store and index ready", extra={"moto": self._moto.endpoint_url})

        services = Services(settings)
        if config.lifecycle_rules is not None:
            apply_lifecycle_rules(services.clients.s3, settings.bucket, config.lifecycle_rules)
            logger.warning("lifecycle rules set on moto's bucket; moto moves no objects")
        objects_dir = (config.data_dir / OBJECTS_FOLDER).resolve()
        spool_dir = (config.data_dir / SPOOL_FOLDER).resolve()
        try:
            objects_dir.mkdir(parents=True, exist_ok=True)
            spool_dir.mkdir(exist_ok=True)
            remove_spool_leftovers(spool_dir)
            transfers = FolderTransferStore(config.data_dir / TRANSFERS_FOLDER, settings.bucket)
        except OSError as exc:
            raise StartError(f"data folder {config.data_dir} is unusable: {exc}") from exc
        notifier = local_notifier(services)
        services.store = FolderObjectStore(objects_dir, settings.bucket, notifier)
        services.transfers = transfers
        transfers.sweep_every(SWEEP_SECONDS)
        services.audit = self._restore_audit(settings)
        restored_feed = self._restore_changes(services)
        self.services = services
        self._start_poller(services)
        self._event_pollers = start_event_pollers(services, config.data_dir)
        # The rebuild indexes what was archived before: no events, no StudyStable and no
        # changes for it. The feed gets the changes its journal lacks afterwards.
        events, arrivals = services.events, services.arrivals
        services.events, services.arrivals = NoPublisher(), None
        services.index_writer = IndexWriter(services.index_model, services.store)
        try:
            self._rebuild_index(services, notifier, objects_dir)
        finally:
            services.events, services.arrivals = events, arrivals
            services.index_writer = IndexWriter(
                services.index_model, services.store, services.change_feed
            )
        self._reconcile_changes(services, restored_feed, objects_dir)

        limits = GatewayLimits(spool_dir=spool_dir)
        self._gateway = self._start_gateway(services, gateway_config, limits)
        logger.info(
            "DICOM gateway ready",
            extra={
                "ae_title": gateway_config.ae_title,
                "address": f"{config.host}:{self.dicom_port}",
            },
        )
        self._http = self._start_http(services, credentials)
        logger.info("DICOMweb ready", extra={"url": self.dicomweb_url})
        self._report_viewer()
        try:
            write_endpoints(config.data_dir, settings, objects_dir)
        except OSError as exc:
            raise StartError(f"data folder {config.data_dir} is unusable: {exc}") from exc
        if credentials is None:
            logger.warning(
                "DICOMweb is open: unsigned requests have every action on site %s; give "
                "--access and --credentials to require SigV4-signed requests",
                config.site,
            )
        else:
            logger.info(
                "DICOMweb is closed: only SigV4-signed requests of the keys in %s, with the "
                "grants of %s",
                config.credentials_file,
                config.access_file,
            )
        logger.info(
            "Cirrus local stack running: DICOM %s@%s:%d, DICOMweb %s, viewer %s, data in %s",
            gateway_config.ae_title,
            config.host,
            self.dicom_port,
            self.dicomweb_url,
            self.viewer_url,
            config.data_dir,
        )

    def _report_viewer(self) -> None:
        folder = self.config.viewer_dir
        if folder is not None and built_viewer(folder):
            logger.info("viewer at %s, from %s", self.viewer_url, folder)
        elif folder is None:
            logger.warning(
                "viewer not found: %s shows how to build it (%s, or run scripts/dev)",
                self.viewer_url,
                BUILD_COMMAND,
            )
        else:
            logger.warning(
                "viewer not built: %s has no %s; build it with %s, or run scripts/dev",
                folder,
                INDEX_FILE,
                BUILD_COMMAND,
            )

    def _restore_audit(self, settings: Settings) -> AuditLog:
        """Write the data folder's audit journal into the new audit table; return the log."""
        journal = FileAuditJournal(self.config.data_dir / JOURNAL_FILE)
        model = bind_audit_model(settings)
        if model is None:
            raise StartError("the local stack's settings name no audit table")
        try:
            restored = restore_journal(journal.path, model)
        except StoreUnavailableError as exc:
            raise StartError(f"audit journal {journal.path} was not restored: {exc}") from exc
        if restored:
            logger.info("audit records restored", extra={"records": restored})
        self._audit_table = TableWriter(model)
        return AuditLog(model, settings.deployment, journal, deferred=self._audit_table)

    def _restore_changes(self, services: Services) -> RestoredFeed:
        """Write the data folder's change journal into the new changes table.

        Sets ``services.change_feed`` to a feed that appends to the journal, so every writer
        of this process journals its changes.
        """
        journal = FileChangeJournal(self.config.data_dir / CHANGE_JOURNAL_FILE)
        model = bind_change_model(services.settings)
        if model is None:
            raise StartError("the local stack's settings name no changes table")
        try:
            restored = restore_change_journal(journal.path, model)
        except StoreUnavailableError as exc:
            raise StartError(f"change journal {journal.path} was not restored: {exc}") from exc
        if restored.changes:
            logger.info("change feed restored", extra={"changes": restored.changes})
        services.change_feed = ChangeFeed(model, journal=journal)
        return restored

    def _reconcile_changes(
        self, services: Services, restored: RestoredFeed, objects_dir: Path
    ) -> None:
        """Add the changes of instances archived or removed while no feed was recording."""
        feed = services.change_feed
        assert feed is not None  # set by _restore_changes
        # A file that ingest rejected is archived but not indexed: the feed does not list it.
        saved = (InstanceKey.parse(object_key) for object_key, _ in saved_objects(objects_dir))
        archived = (key for key in saved if key not in self._unindexed)
        try:
            added = reconcile_feed(feed, restored, archived)
        except StoreUnavailableError as exc:
            raise StartError(f"change feed was not reconciled: {exc}") from exc
        if any(added.values()):
            logger.info("change feed completed from the archive", extra=added)

    def _journal_counters(self) -> None:
        """Keep each site's last handed-out number, so that the next start hands out none again."""
        feed = self.services.change_feed if self.services is not None else None
        if feed is None or not isinstance(feed.journal, FileChangeJournal):
            return
        try:
            journal_counters(feed.model, feed.journal)
        except StoreUnavailableError as exc:
            logger.error("change feed counters not journaled", extra={"error": str(exc)})

    def _start_poller(self, services: Services) -> None:
        from functions.ingest import handler as ingest_handler

        sqs = services.clients.sqs
        queue_url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self._restore_formats.append(use_console_format(ingest_handler.logger))
        handle = functools.partial(ingest_handler.handle, services=services)
        self._poller = IngestPoller(
            sqs,
            queue_url,
            queue_arn,
            services.settings.region,
            handle,
            batching_window=INGEST_BATCHING_WINDOW_SECONDS,
            stream_gap=INGEST_STREAM_GAP_SECONDS,
        )
        self._poller.start()
        logger.info("ingest poller ready", extra={"queue": services.settings.ingest_queue})

    def _rebuild_index(
        self, services: Services, notifier: QueueNotifier, objects_dir: Path
    ) -> None:
        started = time.monotonic()
        sqs = services.clients.sqs
        refresher = BundleRefresher(
            MetadataBundles(services.index_model, services.store), sqs, notifier.queue_url
        )
        count = rebuild_index(
            objects_dir, services.store, services.index_writer, notifier, refresher
        )
        if count.queued:
            # The instances that failed go through the queue, as a new object would. Those
            # that ingest rejected as invalid fail there too, after retries that take about
            # 20 s, so the start waits only when another kind of failure may still be indexed.
            if set(count.queued_keys) - set(count.rejected_keys):
                self.wait_until_indexed(_REBUILD_TIMEOUT_SECONDS)
            self._unindexed = _not_indexed(services, count.queued_keys)
        if count.total:
            logger.info(
                "index rebuilt from the data folder",
                extra={
                    "objects": count.total,
                    "queued": count.queued,
                    "rejected": len(count.rejected_keys),
                    "seconds": round(time.monotonic() - started, 1),
                },
            )

    def _start_gateway(
        self, services: Services, gateway_config: AEConfig, limits: GatewayLimits
    ) -> Any:
        from cirrus.gateway.server import Gateway
        from cirrus.gateway.workers import WorkerPool, WorkerSpec, WorkerStartError

        config = self.config
        try:
            if config.gateway_workers == 1:
                return Gateway.start(
                    services,
                    gateway_config,
                    config.host,
                    config.dicom_port,
                    config.tls,
                    limits=limits,
                )
            spec = WorkerSpec(
                services.settings,
                gateway_config,
                config.host,
                config.dicom_port,
                config.tls,
                data_dir=(config.data_dir / OBJECTS_FOLDER).resolve(),
                audit_journal=(config.data_dir / JOURNAL_FILE).resolve(),
                prepare=prepare_gateway_worker,
                # As the gateway in this process, which stops without draining.
                options={"grace_seconds": 0.0, "limits": limits},
            )
            return WorkerPool.start(spec, config.gateway_workers)
        except OSError as exc:
            raise StartError(f"DICOM port {config.host}:{config.dicom_port}: {exc}") from exc
        except WorkerStartError as exc:
            raise StartError(str(exc)) from exc

    def _start_http(
        self, services: Services, credentials: dict[str, LocalCredential] | None
    ) -> Any:
        from cirrus.local.http import serve_http
        from functions.dicomweb import handler as dicomweb_handler

        self._restore_formats.append(use_console_format(dicomweb_handler.logger))
        view = dicomweb_handler.dicomweb_services(services)
        handle = functools.partial(dicomweb_handler.handle, services=view)
        authentication = None
        if credentials is not None:
            verifier = SigV4Verifier(credentials, services.settings.region)
            authentication = LocalAuthentication(verifier, view.audit)
        config = viewer_config(
            f"/{STAGE}", closed=authentication is not None, region=services.settings.region
        )
        # Large retrieves redirect to /transfers/ on this server, which the viewer reaches as
        # its own origin.
        viewer = ViewerSite(self.config.viewer_dir, config)
        transfers = services.transfers
        assert isinstance(transfers, FolderTransferStore)  # set by _start
        site = TransferSite(transfers, viewer)
        try:
            server = serve_http(
                handle,
                self.config.host,
                self.config.http_port,
                authentication=authentication,
                idle_timeout=self.config.http_idle_timeout,
                body_timeout=self.config.http_body_timeout,
                site=site,
            )
        except OSError as exc:
            raise StartError(
                f"HTTP port {self.config.host}:{self.config.http_port}: {exc}"
            ) from exc
        transfers.base_url = f"http://{self.config.host}:{server.port}"
        return server

    def exited_gateway_workers(self) -> list[int]:
        """Return the numbers of the gateway worker processes that have exited on their own.

        A gateway served in this process (one worker) has none.
        """
        exited = getattr(self._gateway, "exited", None)
        return list(exited()) if exited is not None else []

    def wait_until_indexed(self, timeout: float = 30.0) -> bool:
        """Wait until the ingest queue is empty; tell whether it emptied within ``timeout``."""
        return self._poller is not None and self._poller.wait_until_drained(timeout)

    def stop(self) -> None:
        """Stop the components in reverse order; each stop is safe to call twice."""
        if self._http is not None:
            self._http.shutdown()
            self._http = None
        if self._gateway is not None:
            self._gateway.shutdown()
            self._gateway = None
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        while self._event_pollers:
            self._event_pollers.pop().stop()
        if self._audit_table is not None:
            self._audit_table.close()
            self._audit_table = None
        if self.services is not None and isinstance(self.services.transfers, FolderTransferStore):
            self.services.transfers.close()
        if self._moto is not None:
            remove_endpoints(self.config.data_dir)
            self._journal_counters()
            self._moto.stop()
            self._moto = None
        while self._restore_formats:
            self._restore_formats.pop()()
        self._lock.release()
        logger.info("Cirrus local stack stopped")


def _not_indexed(services: Services, object_keys: tuple[str, ...]) -> set[InstanceKey]:
    """Return the instances among ``object_keys`` that the index does not hold."""
    keys = [InstanceKey.parse(object_key) for object_key in object_keys]
    reader = services.index_reader
    return {key for key in keys if not reader.contains(key.site, key.study, key.series, key.sop)}


def local_notifier(services: Services) -> QueueNotifier:
    """Return the notifier that replaces the bucket's notifications to the ingest queue."""
    sqs = services.clients.sqs
    queue_url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]
    return QueueNotifier(sqs, queue_url, services.settings.bucket)


def prepare_gateway_worker() -> dict[str, Any]:
    """Set up a gateway worker process of the local stack: fake AWS credentials, console logs."""
    use_local_credentials()
    configure_console_logging()
    return {}


def _check_port_free(name: str, host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket() as probe:
        # The gateway (pynetdicom) and Werkzeug both set SO_REUSEADDR, so connections in
        # TIME-WAIT from the previous run do not stop them, and must not stop this check. A
        # listening socket still makes the bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartError(f"{name} port {host}:{port} cannot be bound: {exc.strerror}") from exc
