"""Storage Commitment time per instance, and the cost of a TLS association over a plain one.

Starts moto in a child process and a gateway on 127.0.0.1 with a TLS listener whose
certificates are generated for the run. It archives ``--instances`` CT instances through the
write path (claim and S3 PUT, no DICOM network), then requests their commitment in one
N-ACTION and prints the time from the N-ACTION response to the N-EVENT-REPORT, with one
instance checked at a time and with ``CHECK_WORKERS`` at once. It then opens
``--associations`` associations with one C-ECHO each, on the plain port and on the TLS port,
and prints the median milliseconds of both.

    .venv/bin/python bench/commitment_tls.py --instances 1000 --associations 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
    Verification,
)

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.gateway import commitment
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.commitment import STORAGE_COMMITMENT_INSTANCE
from cirrus.gateway.server import Gateway
from cirrus.gateway.tls import TLSConfig, client_context
from cirrus.local.moto_process import LOOPBACK, start_moto, use_local_credentials
from cirrus.local.resources import create_resources
from cirrus.services import Services

# The benchmark reuses the test suite's CT file and certificate helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gateway.scu import CT_SMALL
from tests.gateway.tls_certificates import issue, make_authority

SITE = "bench"
CALLER = "BENCH_SCU"


def archive_cts(services: Services, count: int) -> list[str]:
    """Archive ``count`` copies of CT_small with new UIDs; return their SOP Instance UIDs."""
    template = pydicom.dcmread(CT_SMALL)
    uids = []
    study, series = generate_uid(), generate_uid()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ct.dcm"
        for _ in range(count):
            template.StudyInstanceUID = study
            template.SeriesInstanceUID = series
            template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            template.save_as(path, enforce_file_format=True)
            archive_instance(services.store, SITE, path.read_bytes(), claims=services.claims)
            uids.append(str(template.SOPInstanceUID))
    return uids


def time_commitment(port: int, uids: list[str]) -> float:
    """Request commitment of ``uids``; return the seconds until the N-EVENT-REPORT."""
    arrived = threading.Event()
    outcome: list[int] = []

    def handle(event: Event) -> tuple[int, None]:
        outcome.append(int(event.event_type))
        arrived.set()
        return 0, None

    ae = AE(CALLER)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        LOOPBACK, port, ae_title="CIRRUS", evt_handlers=[(evt.EVT_N_EVENT_REPORT, handle)]
    )
    request = Dataset()
    request.TransactionUID = generate_uid()
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    request.ReferencedSOPSequence = items
    status, _ = assoc.send_n_action(
        request, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
    )
    started = time.perf_counter()
    if status.Status != 0:
        raise RuntimeError(f"N-ACTION failed with 0x{status.Status:04X}")
    if not arrived.wait(600):
        raise RuntimeError("no N-EVENT-REPORT within 600 s")
    elapsed = time.perf_counter() - started
    assoc.release()
    if outcome != [1]:
        raise RuntimeError(f"report event type {outcome}, expected [1]")
    return elapsed


def median_echo_ms(port: int, runs: int, tls_args: tuple[object, str] | None) -> float:
    timings = []
    for _ in range(runs):
        ae = AE(CALLER)
        ae.add_requested_context(Verification)
        started = time.perf_counter()
        assoc = ae.associate(LOOPBACK, port, ae_title="CIRRUS", tls_args=tls_args)  # type: ignore[arg-type]
        if not assoc.is_established or assoc.send_c_echo().Status != 0:
            raise RuntimeError("C-ECHO failed")
        assoc.release()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--associations", type=int, default=50)
    args = parser.parse_args()

    use_local_credentials()
    moto = start_moto()
    try:
        settings = create_resources(
            Settings.for_names(
                ResourceNames(deployment="benchcommit"), endpoint_url=moto.endpoint_url
            )
        )
        services = Services(settings)
        with tempfile.TemporaryDirectory() as folder:
            authority = make_authority(Path(folder), "bench-ca")
            server = issue(authority, Path(folder), "gateway", server=True)
            client = issue(authority, Path(folder), "scu", server=False)
            tls = TLSConfig(
                server.certificate, server.private_key, port=0, ca_file=authority.certificate
            )
            config = AEConfig.model_validate({"sites": {SITE: {"callers": {CALLER: ["store"]}}}})
            uids = archive_cts(services, args.instances)
            with Gateway.start(services, config, LOOPBACK, 0, tls) as gateway:
                for workers in (1, commitment.CHECK_WORKERS):
                    commitment.CHECK_WORKERS = workers
                    seconds = time_commitment(gateway.port, uids)
                    print(
                        f"commitment of {len(uids)} instances, {workers} checks at once: "
                        f"{seconds:.2f} s, {seconds / len(uids) * 1000:.2f} ms per instance"
                    )
                context = client_context(
                    authority.certificate, client.certificate, client.private_key
                )
                assert gateway.tls_port is not None
                plain = median_echo_ms(gateway.port, args.associations, None)
                secure = median_echo_ms(gateway.tls_port, args.associations, (context, LOOPBACK))
                print(f"associate + C-ECHO + release, median of {args.associations}:")
                print(f"  plain {plain:.1f} ms, TLS {secure:.1f} ms")
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
