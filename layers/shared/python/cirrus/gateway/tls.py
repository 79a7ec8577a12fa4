"""DICOM TLS (PS3.15 Annex B): the gateway's TLS listener and the contexts of outgoing TLS.

The gateway serves TLS on a second port, 2762 by default (IANA registers it as dicom-tls),
next to the plain listener. Both contexts follow the BCP 195 profiles of
PS3.15: TLS 1.2 or later, and for TLS 1.2 only the AEAD cipher suites with forward secrecy
that BCP 195 recommends. TLS 1.3 suites are OpenSSL's defaults, which are all AEAD.

With a CA file, client certificates are verified against it. Client certificates are then
either optional (a client without one is served, a client with an invalid one is rejected)
or required (mutual TLS).

pynetdicom 3.0.4 runs the TLS handshake in its accept loop, so one client that connects and
sends nothing would stop every other connection on the port. ``TLSAssociationServer`` moves
the handshake into the connection's own thread and bounds it with a timeout.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cirrus.gateway.connections import GatewayAssociationServer

logger = logging.getLogger(__name__)

DEFAULT_TLS_PORT: Final = 2762

# The TLS 1.2 cipher suites that BCP 195 (RFC 9325 4.2, and RFC 7525 before it) recommends,
# in OpenSSL's names: ECDHE or DHE key exchange, AES-GCM.
BCP195_CIPHERS: Final = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)

# Time a new TLS connection has to finish its handshake; the same as the wait for the
# A-ASSOCIATE-RQ on the plain port.
HANDSHAKE_TIMEOUT_SECONDS: Final = 10.0


class TLSConfigError(ValueError):
    """A certificate, key or CA file is missing or unusable."""


@dataclass(frozen=True)
class TLSConfig:
    """The TLS listener: its port, the server certificate and key, and client verification.

    ``ca_file`` contains the CA certificates that client certificates must chain to. The same
    certificate, key and CA file serve outgoing TLS associations (``client_context``).
    """

    certificate: Path
    private_key: Path
    port: int = DEFAULT_TLS_PORT
    ca_file: Path | None = None
    require_client_certificate: bool = False

    def __post_init__(self) -> None:
        if self.require_client_certificate and self.ca_file is None:
            raise TLSConfigError(
                "client certificates are required but no CA file is given to verify them"
            )
        if not 0 <= self.port <= 65535:
            raise TLSConfigError(f"TLS port {self.port} is invalid; use 0 to 65535")

    def server_context(self) -> ssl.SSLContext:
        """Build the context of the TLS listener; raise ``TLSConfigError`` for unusable files."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _apply_profile(context)
        _load_chain(context, self.certificate, self.private_key)
        if self.ca_file is not None:
            _load_ca(context, self.ca_file)
            context.verify_mode = (
                ssl.CERT_REQUIRED if self.require_client_certificate else ssl.CERT_OPTIONAL
            )
        return context

    def client_context(self) -> ssl.SSLContext:
        """Build the context of an outgoing association, with this gateway's certificate."""
        return client_context(self.ca_file, self.certificate, self.private_key)


def client_context(
    ca_file: Path | None,
    certificate: Path | None = None,
    private_key: Path | None = None,
) -> ssl.SSLContext:
    """Build the context of an outgoing TLS association.

    The peer's certificate must chain to ``ca_file``, or to the system's CAs without one, and
    must name the host that the association connects to (the host name or IP address of a
    C-MOVE destination). With ``certificate`` and ``private_key``, the gateway presents them
    to peers that ask for a client certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_profile(context)
    if ca_file is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_ca(context, ca_file)
    if certificate is not None and private_key is not None:
        _load_chain(context, certificate, private_key)
    return context


def _apply_profile(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    # OpenSSL 3 disables compression and client renegotiation already; the flags keep it so.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _load_chain(context: ssl.SSLContext, certificate: Path, private_key: Path) -> None:
    try:
        context.load_cert_chain(certificate, private_key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"TLS certificate {certificate} or key {private_key} is unusable: {exc}; give a "
            "PEM certificate and its unencrypted PEM private key"
        ) from exc


def _load_ca(context: ssl.SSLContext, ca_file: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"TLS CA file {ca_file} is unusable: {exc}; give PEM CA certificates"
        ) from exc


class TLSAssociationServer(GatewayAssociationServer):
    """A threaded association server that runs each TLS handshake in the connection's thread."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None  # bound by the constructor
        assert self.ssl_context is not None  # set by GatewayAE.make_server for this class
        client_socket, address = self.socket.accept()
        wrapped = self.ssl_context.wrap_socket(
            client_socket, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, address

    def process_request_thread(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: tuple[str, int] | str,
    ) -> None:
        if isinstance(request, ssl.SSLSocket) and not _handshake(request, client_address):
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)


def _handshake(sock: ssl.SSLSocket, client_address: tuple[str, int] | str) -> bool:
    """Run the TLS handshake of a new connection; log and return False when it fails."""
    timeout = sock.gettimeout()
    sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
    try:
        sock.do_handshake()
    except (OSError, ValueError) as exc:
        # ssl.SSLError is an OSError: a rejected certificate, a protocol version or cipher
        # that the profile does not allow, or a peer that closed or timed out.
        address = _address(client_address)
        # A load balancer's TCP health check connects and closes without a ClientHello,
        # every few seconds, so a closed connection is logged at DEBUG only.
        closed = isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError))
        logger.log(
            logging.DEBUG if closed else logging.WARNING,
            "TLS handshake from %s failed: %s",
            address,
            _reason(exc),
            extra={"peer": address, "reason": _reason(exc)},
        )
        return False
    sock.settimeout(timeout)
    return True


def _address(client_address: tuple[str, int] | str) -> str:
    if isinstance(client_address, tuple):
        return f"{client_address[0]}:{client_address[1]}"
    return client_address


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"no handshake within {HANDSHAKE_TIMEOUT_SECONDS:g} s"
    return str(exc) or type(exc).__name__
