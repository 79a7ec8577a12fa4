"""DICOM TLS: dcmtk's echoscu and storescu, Python's ssl and pynetdicom against the TLS listener.

Two gateways run for the module: one that verifies client certificates when a client sends
one, and one that requires them (mutual TLS). The certificates come from a CA made for the
run; a second CA issues the client certificate that both gateways must reject.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import SUCCESS
from cirrus.gateway.tls import (
    BCP195_CIPHERS,
    DEFAULT_TLS_PORT,
    TLSConfig,
    TLSConfigError,
    client_context,
)
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from gateway.main import read_tls
from tests.gateway.gateways import OPEN_CONFIG
from tests.gateway.scu import fresh_ct, run_dcmtk, stored_objects, wait_until
from tests.gateway.tls_certificates import KeyPair, issue, make_authority


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server: KeyPair
    client: KeyPair
    # Issued by another CA, so that the gateways cannot verify it.
    rogue_client: KeyPair
    expired_client: KeyPair


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("tls")
    authority = make_authority(folder, "cirrus-test-ca")
    rogue = make_authority(folder, "rogue-ca")
    return Certificates(
        ca=authority.certificate,
        server=issue(authority, folder, "gateway", server=True),
        client=issue(authority, folder, "modality", server=False),
        rogue_client=issue(rogue, folder, "rogue-modality", server=False),
        expired_client=issue(authority, folder, "expired-modality", server=False, days=-1),
    )


def start_tls_gateway(
    settings: Settings, archive: ObjectStore, certificates: Certificates, *, required: bool
) -> Gateway:
    services = Services(settings)
    services.store = archive
    tls = TLSConfig(
        certificate=certificates.server.certificate,
        private_key=certificates.server.private_key,
        port=0,
        ca_file=certificates.ca,
        require_client_certificate=required,
    )
    return Gateway.start(services, OPEN_CONFIG, LOOPBACK, 0, tls)


@pytest.fixture(scope="module")
def tls_gateway(
    gateway_settings: Settings, archive: ObjectStore, certificates: Certificates
) -> Iterator[Gateway]:
    with start_tls_gateway(gateway_settings, archive, certificates, required=False) as running:
        yield running


@pytest.fixture(scope="module")
def mutual_gateway(
    gateway_settings: Settings, archive: ObjectStore, certificates: Certificates
) -> Iterator[Gateway]:
    with start_tls_gateway(gateway_settings, archive, certificates, required=True) as running:
        yield running


def tls_port(gateway: Gateway) -> str:
    assert gateway.tls_port is not None
    return str(gateway.tls_port)


def echoscu_tls(gateway: Gateway, ca: Path, client: KeyPair | None) -> tuple[int, str]:
    """Run echoscu over TLS, with ``client`` as its certificate or anonymous without one."""
    identity = ["+tls", str(client.private_key), str(client.certificate)] if client else ["+tla"]
    result = run_dcmtk(
        "echoscu", *identity, "+cf", str(ca), "-aec", DEFAULT_AE_TITLE, LOOPBACK, tls_port(gateway)
    )
    return result.returncode, result.stdout + result.stderr


def handshake_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("TLS handshake from")]


def closed_before_sending(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().endswith("closed before it sent anything")]


# --- dcmtk -------------------------------------------------------------------------------


def test_echoscu_with_client_certificate(tls_gateway: Gateway, certificates: Certificates) -> None:
    returncode, output = echoscu_tls(tls_gateway, certificates.ca, certificates.client)
    assert returncode == 0, output


def test_echoscu_without_client_certificate(
    tls_gateway: Gateway, certificates: Certificates
) -> None:
    returncode, output = echoscu_tls(tls_gateway, certificates.ca, None)
    assert returncode == 0, output


def test_storescu_over_tls_stores(
    tls_gateway: Gateway, certificates: Certificates, archive: ObjectStore, tmp_path: Path
) -> None:
    path, key = fresh_ct(tmp_path)
    client = certificates.client
    result = run_dcmtk(
        "storescu",
        "+tls",
        str(client.private_key),
        str(client.certificate),
        "+cf",
        str(certificates.ca),
        "-aec",
        DEFAULT_AE_TITLE,
        LOOPBACK,
        tls_port(tls_gateway),
        str(path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert key in stored_objects(archive)


def test_plain_port_serves_beside_tls(tls_gateway: Gateway) -> None:
    result = run_dcmtk("echoscu", "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(tls_gateway.port))
    assert result.returncode == 0, result.stdout + result.stderr


def test_echoscu_rejects_untrusted_gateway(
    tls_gateway: Gateway, certificates: Certificates
) -> None:
    # The client trusts only the rogue CA, which did not issue the gateway's certificate.
    rogue_ca = certificates.rogue_client.certificate.parent / "rogue-ca.crt"
    returncode, _ = echoscu_tls(tls_gateway, rogue_ca, None)
    assert returncode != 0


def test_optional_mode_rejects_invalid_certificate(
    tls_gateway: Gateway, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cirrus.gateway")
    returncode, _ = echoscu_tls(tls_gateway, certificates.ca, certificates.rogue_client)
    assert returncode != 0
    assert wait_until(lambda: bool(handshake_failures(caplog)))
    assert "certificate" in handshake_failures(caplog)[0].getMessage().lower()


# --- mutual TLS --------------------------------------------------------------------------


def test_mutual_accepts_valid_certificate(
    mutual_gateway: Gateway, certificates: Certificates
) -> None:
    returncode, output = echoscu_tls(mutual_gateway, certificates.ca, certificates.client)
    assert returncode == 0, output


@pytest.mark.parametrize("client", [None, "rogue_client", "expired_client"])
def test_mutual_rejects_client(
    mutual_gateway: Gateway,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
    client: str | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="cirrus.gateway")
    pair = getattr(certificates, client) if client else None
    returncode, _ = echoscu_tls(mutual_gateway, certificates.ca, pair)
    assert returncode != 0
    assert wait_until(lambda: bool(handshake_failures(caplog)))
    (record,) = handshake_failures(caplog)
    assert record.levelno == logging.WARNING
    assert record.__dict__["peer"].startswith(f"{LOOPBACK}:")
    assert wait_until(lambda: not mutual_gateway.active_associations())


# --- protocol versions and cipher suites -------------------------------------------------


def python_client(
    certificates: Certificates, *, tls_version: ssl.TLSVersion, ciphers: str | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certificates.ca)
    # Security level 0 lets the client offer what its OpenSSL would otherwise refuse, so
    # that the gateway's own limits are what the handshake tests.
    context.set_ciphers(f"{ciphers or 'ALL'}:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = tls_version
    return context


def connect(gateway: Gateway, context: ssl.SSLContext) -> tuple[str | None, str]:
    """Run a TLS handshake with the gateway and return the version and cipher suite."""
    raw = socket.create_connection((LOOPBACK, int(tls_port(gateway))), timeout=10)
    with context.wrap_socket(raw, server_hostname=LOOPBACK) as sock:
        cipher = sock.cipher()
        assert cipher is not None
        return sock.version(), cipher[0]


def test_tls_1_2_uses_bcp195_cipher(tls_gateway: Gateway, certificates: Certificates) -> None:
    context = python_client(certificates, tls_version=ssl.TLSVersion.TLSv1_2)
    version, cipher = connect(tls_gateway, context)
    assert version == "TLSv1.2"
    assert cipher in BCP195_CIPHERS.split(":")


def test_tls_1_3_accepted(tls_gateway: Gateway, certificates: Certificates) -> None:
    context = python_client(certificates, tls_version=ssl.TLSVersion.TLSv1_3)
    version, _ = connect(tls_gateway, context)
    assert version == "TLSv1.3"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_rejected(
    tls_gateway: Gateway, certificates: Certificates, tls_version: ssl.TLSVersion
) -> None:
    context = python_client(certificates, tls_version=tls_version)
    with pytest.raises(ssl.SSLError):
        connect(tls_gateway, context)


# CBC suites that the gateway's EC certificate could serve, but that BCP 195 does not list.
@pytest.mark.parametrize(
    "cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384"]
)
def test_cipher_outside_profile_rejected(
    tls_gateway: Gateway, certificates: Certificates, cipher: str
) -> None:
    context = python_client(certificates, tls_version=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
    with pytest.raises(ssl.SSLError):
        connect(tls_gateway, context)


def test_silent_client_does_not_block_others(
    tls_gateway: Gateway, certificates: Certificates
) -> None:
    # A connection that never starts its handshake must not hold the accept loop.
    with socket.create_connection((LOOPBACK, int(tls_port(tls_gateway))), timeout=10):
        returncode, output = echoscu_tls(tls_gateway, certificates.ca, certificates.client)
    assert returncode == 0, output


def test_closed_connections_not_warned(
    tls_gateway: Gateway, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    # A load balancer's TCP health check connects and closes at once.
    caplog.set_level(logging.DEBUG, logger="cirrus.gateway")
    peers = []
    for _ in range(3):
        connection = socket.create_connection((LOOPBACK, int(tls_port(tls_gateway))), timeout=10)
        peers.append(f"{LOOPBACK}:{connection.getsockname()[1]} ")
        connection.close()

    def own(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
        # A connection left by an earlier test may close meanwhile and be logged as well.
        return [r for r in records if any(peer in r.getMessage() for peer in peers)]

    # The connections close before they send a ClientHello, so the gateway starts no handshake.
    assert wait_until(lambda: len(own(closed_before_sending(caplog))) == 3)
    assert all(r.levelno == logging.DEBUG for r in closed_before_sending(caplog))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert wait_until(lambda: not tls_gateway.active_associations())
    returncode, output = echoscu_tls(tls_gateway, certificates.ca, certificates.client)
    assert returncode == 0, output


# --- pynetdicom with the outgoing context ------------------------------------------------


def test_client_context_associates_over_tls(
    mutual_gateway: Gateway, certificates: Certificates, archive: ObjectStore, tmp_path: Path
) -> None:
    context = client_context(
        certificates.ca, certificates.client.certificate, certificates.client.private_key
    )
    ae = AE("TLSSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(
        LOOPBACK,
        int(tls_port(mutual_gateway)),
        ae_title=DEFAULT_AE_TITLE,
        tls_args=(context, LOOPBACK),
    )
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == SUCCESS
        path, key = fresh_ct(tmp_path)
        assert assoc.send_c_store(path).Status == SUCCESS
    finally:
        assoc.release()
    assert key in stored_objects(archive)


def test_client_context_checks_host_name(tls_gateway: Gateway, certificates: Certificates) -> None:
    context = client_context(certificates.ca)
    raw = socket.create_connection((LOOPBACK, int(tls_port(tls_gateway))), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError), raw:
        context.wrap_socket(raw, server_hostname="archive.example")


# --- configuration errors ----------------------------------------------------------------


def test_required_without_ca_rejected(certificates: Certificates) -> None:
    with pytest.raises(TLSConfigError, match="no CA file"):
        TLSConfig(
            certificates.server.certificate,
            certificates.server.private_key,
            require_client_certificate=True,
        )


def test_unusable_files_rejected(certificates: Certificates, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(TLSConfigError, match=r"missing\.pem"):
        TLSConfig(missing, certificates.server.private_key).server_context()
    # The key of another certificate does not match.
    with pytest.raises(TLSConfigError, match="unusable"):
        TLSConfig(certificates.server.certificate, certificates.client.private_key).server_context()
    with pytest.raises(TLSConfigError, match="CA file"):
        TLSConfig(
            certificates.server.certificate,
            certificates.server.private_key,
            ca_file=certificates.server.private_key,
        ).server_context()


def test_start_fails_before_listening(
    gateway_settings: Settings, certificates: Certificates, tmp_path: Path
) -> None:
    tls = TLSConfig(tmp_path / "absent.crt", certificates.server.private_key, port=0)
    with pytest.raises(TLSConfigError):
        Gateway.start(Services(gateway_settings), OPEN_CONFIG, LOOPBACK, 0, tls)


# --- the container's environment variables -----------------------------------------------


def test_environment_without_tls(certificates: Certificates) -> None:
    assert read_tls({}) is None


def test_environment_with_mutual_tls(certificates: Certificates) -> None:
    tls = read_tls(
        {
            "CIRRUS_TLS_CERTIFICATE": str(certificates.server.certificate),
            "CIRRUS_TLS_KEY": str(certificates.server.private_key),
            "CIRRUS_TLS_CA": str(certificates.ca),
            "CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE": "true",
        }
    )
    assert tls is not None
    assert tls.port == DEFAULT_TLS_PORT
    assert tls.ca_file == certificates.ca
    assert tls.require_client_certificate


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"CIRRUS_TLS_KEY": ""}, "both CIRRUS_TLS_CERTIFICATE and CIRRUS_TLS_KEY"),
        ({"CIRRUS_TLS_PORT": "0"}, "CIRRUS_TLS_PORT '0' is invalid"),
        ({"CIRRUS_TLS_PORT": "dicom"}, "CIRRUS_TLS_PORT 'dicom' is invalid"),
        ({"CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE": "yes"}, "use true or false"),
        ({"CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE": "true"}, "no CA file"),
        ({"CIRRUS_TLS_CA": "/nonexistent/ca.pem"}, "CA file /nonexistent/ca.pem"),
        ({"CIRRUS_TLS_CERTIFICATE": "/nonexistent/gw.pem"}, "/nonexistent/gw.pem"),
    ],
)
def test_environment_errors(
    certificates: Certificates, changes: dict[str, str], message: str
) -> None:
    environ = {
        "CIRRUS_TLS_CERTIFICATE": str(certificates.server.certificate),
        "CIRRUS_TLS_KEY": str(certificates.server.private_key),
        **changes,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        read_tls(environ)
