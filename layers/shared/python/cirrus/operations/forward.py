"""``cirrus export --to-dimse``: send a study's instances to a DICOM peer with C-STORE.

One association carries the whole study. Each instance is sent from a file as archived (or as
de-identified), so pynetdicom sends its encoded data set unchanged. That needs a presentation
context of the instance's own transfer syntax, so the association proposes exactly the (SOP
Class, Transfer Syntax) pairs of the study.

A transient failure is retried up to ``retries`` times per instance, after a pause that doubles
each time: no response (the association aborted or timed out), the status Refused: Out of
Resources (A7xx, PS3.4 Table B.2-1), and a failed connection. Every other failure status, and
an instance whose presentation context the peer rejected, fails the instance at once. An
association rejection ends the run, because no retry would change it.
"""

from __future__ import annotations

import ipaddress
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydicom import dcmread
from pynetdicom import AE, evt

from cirrus.config import validate_ae_title
from cirrus.deid import Deidentifier
from cirrus.gateway.responses import return_responses_to_sender
from cirrus.gateway.retrieve import _disable_nagle
from cirrus.operations.export import (
    FAILED,
    ExportError,
    InstanceResult,
    Report,
    read_instances,
    study_keys,
)
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

STORED: Final = "stored"
WARNING: Final = "stored with warning"
# PS3.8 9.3.2.1 allows at most 128 presentation contexts in one association request.
MAX_CONTEXTS: Final = 128
_WARNING_STATUSES: Final = frozenset({0xB000, 0xB006, 0xB007})


class ForwardError(ExportError):
    """The study cannot be sent at all: the peer rejected the association or was never reached."""


@dataclass(frozen=True)
class Peer:
    """A C-STORE SCP: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        """Parse ``AE@HOST:PORT`` (an IPv6 host in brackets), or raise ``ValueError``.

        The message names what is wrong: the form, the AE title, the host or the port.
        """
        ae_title, at, address = text.rpartition("@")
        host, colon, port_text = address.rpartition(":")
        if not at or not colon or not host:
            raise ValueError(
                f"peer {text!r} is invalid; give AE@HOST:PORT, such as PACS@10.0.0.5:104 or "
                "PACS@[fd00::5]:104"
            )
        try:
            title = validate_ae_title(ae_title)
        except ValueError as exc:
            raise ValueError(f"peer {text!r} is invalid: {exc}") from exc
        host = _parse_host(host, text)
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"port {port_text!r} of peer {text!r} is invalid; use 1 to 65535")
        return cls(title, host, int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def _parse_host(host: str, text: str) -> str:
    """Return the host of a peer: a name, an IPv4 address, or an IPv6 address in brackets."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError as exc:
            raise ValueError(f"host {host} of peer {text!r} is not a valid IPv6 address") from exc
    if ":" in host:
        raise ValueError(
            f"host {host!r} of peer {text!r} is invalid; write an IPv6 address in brackets, "
            f"such as PACS@[{host}]:104"
        )
    if not host.isascii() or not host.isprintable() or " " in host:
        raise ValueError(f"host {host!r} of peer {text!r} is invalid; give a name or an address")
    return host


@dataclass(frozen=True)
class ForwardSettings:
    """How to reach the peer and how hard to try."""

    calling_ae_title: str = "CIRRUS"
    retries: int = 3
    # Seconds before the first retry; each further retry waits twice as long.
    retry_delay: float = 1.0
    # Seconds to wait for an association response, a DIMSE response and network activity.
    timeout: float = 30.0


@dataclass
class _Pending:
    key: str
    path: Path
    attempts: int = 0


def forward_study(
    store: ObjectStore,
    site: str,
    study_uid: str,
    peer: Peer,
    deidentifier: Deidentifier | None,
    settings: ForwardSettings,
    report: Report,
) -> dict[str, int]:
    """Send every instance of the study to ``peer``; return the count of each result.

    Raises ``ExportError`` when the study is not found, ``ForwardError`` when the peer rejects
    the association or cannot be reached after the retries.
    """
    keys = study_keys(store, site, study_uid)
    counts = {STORED: 0, WARNING: 0, FAILED: 0}

    def finish(result: InstanceResult) -> None:
        counts[result.result] += 1
        report(result)

    with tempfile.TemporaryDirectory(prefix="cirrus-forward-") as scratch:
        pending: list[_Pending] = []
        contexts: set[tuple[str, str]] = set()
        for number, (key, part10) in enumerate(read_instances(store, keys, deidentifier)):
            if isinstance(part10, InstanceResult):
                finish(part10)
                continue
            path = Path(scratch) / f"{number:06d}.dcm"
            path.write_bytes(part10)
            meta = dcmread(path, stop_before_pixels=True).file_meta
            contexts.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
            pending.append(_Pending(key, path))
        if len(contexts) > MAX_CONTEXTS:
            raise ForwardError(
                f"the study needs {len(contexts)} presentation contexts, more than the "
                f"{MAX_CONTEXTS} one association may propose"
            )
        _send_all(pending, contexts, peer, settings, finish)
    return counts


def _send_all(
    pending: list[_Pending],
    contexts: set[tuple[str, str]],
    peer: Peer,
    settings: ForwardSettings,
    finish: Callable[[InstanceResult], None],
) -> None:
    ae = AE(ae_title=settings.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.timeout
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    connection_attempts = 0
    while pending:
        assoc = ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, _disable_nagle)],
        )
        if assoc.is_rejected:
            raise ForwardError(f"{peer} rejected the association from {ae.ae_title}")
        if not assoc.is_established:
            connection_attempts += 1
            if connection_attempts > settings.retries:
                raise ForwardError(f"no association with {peer} after {connection_attempts} tries")
            _pause(settings, connection_attempts, f"association with {peer} failed")
            continue
        logger.info("association established", extra={"peer": str(peer), "instances": len(pending)})
        return_responses_to_sender(assoc)
        try:
            pending = _send_on(assoc, pending, settings, finish)
        finally:
            if assoc.is_established:
                assoc.release()


def _send_on(
    assoc: Any,
    pending: list[_Pending],
    settings: ForwardSettings,
    finish: Callable[[InstanceResult], None],
) -> list[_Pending]:
    """Send ``pending`` on ``assoc``; return the instances to try again on a new association."""
    retry: list[_Pending] = []
    for index, item in enumerate(pending):
        if not assoc.is_established:
            return retry + pending[index:]
        try:
            status = assoc.send_c_store(item.path)
        except ValueError as exc:
            # pynetdicom raises ValueError when the peer accepted no presentation context for
            # the instance's SOP Class and Transfer Syntax.
            finish(InstanceResult(item.key, FAILED, str(exc)))
            continue
        code = int(status.Status) if status and "Status" in status else None
        if code == 0x0000:
            finish(InstanceResult(item.key, STORED))
        elif code in _WARNING_STATUSES:
            finish(InstanceResult(item.key, WARNING, f"status 0x{code:04X}"))
        elif code is None or code & 0xFF00 == 0xA700:
            detail = "no response" if code is None else f"status 0x{code:04X}"
            item.attempts += 1
            if item.attempts > settings.retries:
                finish(InstanceResult(item.key, FAILED, f"{detail} after {item.attempts} tries"))
                continue
            _pause(settings, item.attempts, f"C-STORE failed transiently: {detail}")
            retry.append(item)
        else:
            comment = str(status.get("ErrorComment", "")) if status else ""
            finish(InstanceResult(item.key, FAILED, f"status 0x{code:04X} {comment}".strip()))
    return retry


def _pause(settings: ForwardSettings, attempt: int, reason: str) -> None:
    delay = settings.retry_delay * 2 ** (attempt - 1)
    logger.warning("retrying", extra={"reason": reason, "attempt": attempt, "delay": delay})
    time.sleep(delay)
