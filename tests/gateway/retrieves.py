"""Helpers of the C-MOVE and C-GET tests: an indexed archive, destinations and an SCU.

Instances are archived and indexed as in production (``archive_instance`` then
``ingest_object``), so the gateway selects them from the DynamoDB index and reads them from S3.
Destinations are dcmtk's storescp, run with the loopback shim of ``tests.peers.orthanc`` so that
it listens on 127.0.0.1 only and stopped by its PID, and pynetdicom Storage SCPs whose
C-STORE statuses a test chooses.
"""

from __future__ import annotations

import copy
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from cirrus.archive import archive_instance
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from tests.gateway.scu import DCMTK_TIMEOUT_SECONDS
from tests.peers.orthanc import build_shim, free_port

_STORESCP_START_SECONDS = 10.0


@dataclass(frozen=True)
class Archived:
    """One archived and indexed instance."""

    study: str
    series: str
    sop: str
    sop_class: str
    transfer_syntax: str
    object_key: str


def archive(services: Services, site: str, ds: Dataset) -> Archived:
    """Archive ``ds`` for ``site`` and index it, as the gateway and ingest would."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    stored = archive_instance(services.store, site, buffer.getvalue())
    event = ObjectEvent(stored.key.object_key, etag=stored.stored.etag)
    ingest_object(services.store, services.index_writer, event)
    return Archived(
        study=ds.StudyInstanceUID,
        series=ds.SeriesInstanceUID,
        sop=ds.SOPInstanceUID,
        sop_class=str(ds.SOPClassUID),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        object_key=stored.key.object_key,
    )


def failed_uids(final_identifier: Dataset | None) -> list[str]:
    """Return Failed SOP Instance UID List (0008,0058) of a final response's identifier."""
    assert final_identifier is not None, "the final response has no identifier"
    value = final_identifier.get("FailedSOPInstanceUIDList", [])
    if isinstance(value, str):
        return [value] if value else []
    return [str(uid) for uid in value]


def sop_uids(items: list[Archived]) -> set[str]:
    return {item.sop for item in items}


def renamed(template: Dataset, patient_id: str, study: str, series: str) -> Dataset:
    """Return a copy of ``template`` with the given patient, study and series and a new SOP UID."""
    ds = copy.deepcopy(template)
    ds.PatientID = patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def identifier(level: str, **keys: str | list[str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@dataclass
class StoreSCP:
    """dcmtk's storescp on a loopback port, writing what it receives into ``folder``."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    def received(self) -> dict[str, Dataset]:
        """Return the received data sets by SOP Instance UID."""
        datasets: dict[str, Dataset] = {}
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                ds = pydicom.dcmread(path)
                datasets[str(ds.SOPInstanceUID)] = ds
        return datasets


@contextmanager
def running_storescp(folder: Path, ae_title: str, port: int | None = None) -> Iterator[StoreSCP]:
    """Run storescp, accepting every transfer syntax (+xa), until the block ends.

    ``port`` is for a caller that configured the port beforehand; by default a free one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    output = folder / "received"
    output.mkdir()
    shim = build_shim(folder)
    port = free_port() if port is None else port
    log = (folder / "storescp.log").open("wb")
    process = subprocess.Popen(
        ["storescp", "-aet", ae_title, "+xa", "-od", str(output), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1", "LD_PRELOAD": str(shim)},
    )
    log.close()
    try:
        _wait_for_port(process, port)
        yield StoreSCP(process, port, output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=DCMTK_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + _STORESCP_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited with {process.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"storescp did not listen on port {port} within 10 s")


@dataclass
class PynetdicomSCP:
    """A pynetdicom Storage SCP whose status for each instance ``answer`` decides."""

    ae_title: str
    transfer_syntaxes: Sequence[str]
    answer: Callable[[Dataset], int] = lambda ds: 0x0000
    received: list[Dataset] = field(default_factory=list)
    syntaxes: list[UID] = field(default_factory=list)
    originators: list[tuple[str, int]] = field(default_factory=list)
    # The maximum PDU length that the sender announced, for each received instance.
    sender_max_pdus: list[int] = field(default_factory=list)
    server: ThreadedAssociationServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def handle_store(self, event: Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        request: Any = event.request
        with self.lock:
            self.received.append(ds)
            self.syntaxes.append(UID(event.context.transfer_syntax))
            self.originators.append(
                (
                    str(request.MoveOriginatorApplicationEntityTitle or "").strip(),
                    int(request.MoveOriginatorMessageID or 0),
                )
            )
            self.sender_max_pdus.append(event.assoc.requestor.maximum_length)
        return self.answer(ds)


@contextmanager
def running_pynetdicom_scp(
    ae_title: str,
    transfer_syntaxes: Sequence[str],
    answer: Callable[[Dataset], int] = lambda ds: 0x0000,
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[PynetdicomSCP]:
    """Run a pynetdicom Storage SCP on ``port`` of 127.0.0.1 (0: a free one) for the block.

    With ``ssl_context`` it serves TLS only.
    """
    scp = PynetdicomSCP(ae_title, transfer_syntaxes, answer)
    ae = AE(ae_title)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 10
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, list(transfer_syntaxes))
    server = ae.start_server(
        (LOOPBACK, port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, scp.handle_store)],
        ssl_context=ssl_context,
    )
    assert server is not None
    scp.server = server
    try:
        yield scp
    finally:
        server.shutdown()
