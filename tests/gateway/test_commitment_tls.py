"""Storage Commitment reports on a new association over DICOM TLS.

The SCU's report listener is a TLS server that requires a client certificate from the CA of
the run, so a report arrives only when the gateway's outgoing context presents its own
certificate and verifies the listener's.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
)
from pynetdicom.transport import ThreadedAssociationServer

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.commitment import (
    ALL_COMMITTED,
    STORAGE_COMMITMENT_INSTANCE,
    CommitmentService,
)
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import SUCCESS
from cirrus.gateway.tls import TLSConfig
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import SITE, fresh_ct
from tests.gateway.tls_certificates import KeyPair, issue, make_authority

SCU = "COMMIT_TLS"
REPORT_TIMEOUT_SECONDS = 15.0


@dataclass
class TLSListener:
    """The SCU's TLS listener, and the report and gateway certificate that it received."""

    server: ThreadedAssociationServer
    reports: list[tuple[int, Dataset, dict[str, Any]]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@dataclass(frozen=True)
class Certificates:
    ca: Path
    gateway: KeyPair
    listener: KeyPair


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("commitment-tls")
    authority = make_authority(folder, "commitment-ca")
    # Both ends serve and connect, so both certificates name 127.0.0.1.
    return Certificates(
        authority.certificate,
        issue(authority, folder, "gateway", server=True),
        issue(authority, folder, "scu-listener", server=True),
    )


@pytest.fixture(scope="module")
def listener(certificates: Certificates) -> Iterator[TLSListener]:
    context = TLSConfig(
        certificates.listener.certificate,
        certificates.listener.private_key,
        port=0,
        ca_file=certificates.ca,
        require_client_certificate=True,
    ).server_context()
    holder: list[TLSListener] = []

    def handle(event: Event) -> tuple[int, None]:
        sock = event.assoc.dul.socket
        assert sock is not None and isinstance(sock.socket, ssl.SSLSocket)
        peer_certificate = sock.socket.getpeercert() or {}
        holder[0].reports.append(
            (int(event.event_type), event.event_information, dict(peer_certificate))
        )
        holder[0].arrived.set()
        return SUCCESS, None

    ae = AE(SCU)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = ae.start_server(
        (LOOPBACK, 0),
        block=False,
        ssl_context=context,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, handle)],
    )
    assert server is not None
    holder.append(TLSListener(server))
    yield holder[0]
    server.shutdown()


def start_commitment_gateway(
    settings: Settings, archive: ObjectStore, listener: TLSListener, tls: TLSConfig | None
) -> Gateway:
    config = AEConfig.model_validate(
        {
            "sites": {
                SITE: {
                    "callers": {SCU: ["store"]},
                    "destinations": {SCU: {"host": LOOPBACK, "port": listener.port, "tls": True}},
                }
            }
        }
    )
    services = Services(settings)
    services.store = archive
    gateway = Gateway.start(services, config, LOOPBACK, 0, tls)
    commitment_service(gateway)._report_retry_seconds = 0.1
    return gateway


def commitment_service(gateway: Gateway) -> CommitmentService:
    (service,) = [s for s in gateway.ae.dimse_services if isinstance(s, CommitmentService)]
    return service


def request_and_release(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Dataset:
    """Store a CT, request its commitment and release before the gateway reports."""
    service = commitment_service(gateway)
    released = threading.Event()
    original = service.commit

    def commit_after_release(*args: Any) -> Any:
        assert released.wait(REPORT_TIMEOUT_SECONDS)
        return original(*args)

    monkeypatch.setattr(service, "commit", commit_after_release)
    path, _ = fresh_ct(tmp_path)
    ae = AE(SCU)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(LOOPBACK, gateway.port, ae_title=DEFAULT_AE_TITLE)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(path).Status == SUCCESS
        request = Dataset()
        request.TransactionUID = generate_uid()
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = pydicom.dcmread(path).SOPInstanceUID
        request.ReferencedSOPSequence = [item]
        status, _ = assoc.send_n_action(
            request, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
        assert status.Status == SUCCESS
    finally:
        assoc.release()
    released.set()
    return request


def test_report_over_tls(
    gateway_settings: Settings,
    archive: ObjectStore,
    certificates: Certificates,
    listener: TLSListener,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    tls = TLSConfig(
        certificates.gateway.certificate,
        certificates.gateway.private_key,
        port=0,
        ca_file=certificates.ca,
    )
    with start_commitment_gateway(gateway_settings, archive, listener, tls) as gateway:
        request = request_and_release(gateway, monkeypatch, tmp_path)
        assert listener.arrived.wait(REPORT_TIMEOUT_SECONDS), "no report arrived over TLS"

    ((event_type, report, peer_certificate),) = listener.reports
    assert event_type == ALL_COMMITTED
    assert report.TransactionUID == request.TransactionUID
    subject = dict(pair[0] for pair in peer_certificate["subject"])
    assert subject["commonName"] == "gateway"


def test_tls_destination_without_tls_config(
    gateway_settings: Settings,
    archive: ObjectStore,
    listener: TLSListener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING, logger="cirrus.gateway")
    listener.reports.clear()
    listener.arrived.clear()
    with start_commitment_gateway(gateway_settings, archive, listener, None) as gateway:
        request_and_release(gateway, monkeypatch, tmp_path)
        assert commitment_service(gateway).wait_idle(REPORT_TIMEOUT_SECONDS)

    failures = [r for r in caplog.records if "(attempt" in r.getMessage()]
    assert len(failures) == 3
    assert "no TLS configuration" in failures[0].getMessage()
    assert not listener.reports
