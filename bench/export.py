"""Throughput of de-identification, of ``cirrus export --to`` and of ``--to-dimse``.

Archives ``--instances`` instances of one study (pydicom's CT_small.dcm with new UIDs, 39 KB)
in a local folder store, then times: de-identification alone, a File-set export into a folder
as archived and de-identified, and C-STORE to dcmtk's storescp, bound to 127.0.0.1
by a preloaded shim, with TCP_NODELAY=1 and writing to a temporary folder.

    .venv/bin/python bench/export.py --instances 300
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom
from pydicom.uid import generate_uid

from cirrus.deid import Deidentifier
from cirrus.local.datadir import FolderObjectStore
from cirrus.operations.export import export_file_set
from cirrus.operations.forward import ForwardSettings, Peer, forward_study
from tests.gateway.retrieves import running_storescp
from tests.pydicom_files import bundled

SITE = "bench"


def archive_study(store: FolderObjectStore, count: int) -> str:
    study, series = generate_uid(), generate_uid()
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    template.StudyInstanceUID = study
    template.SeriesInstanceUID = series
    for _ in range(count):
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        buffer = io.BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        key = f"sites/{SITE}/studies/{study}/series/{series}/instances/{template.SOPInstanceUID}"
        store.put(key + ".dcm", buffer.getvalue())
    return study


def timed(label: str, count: int, run: object) -> None:
    started = time.perf_counter()
    run()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    print(f"{label:<40} {count / seconds:8.1f} inst/s  ({seconds:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    count = parser.parse_args().instances
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        store = FolderObjectStore(root / "objects", "bench")
        study = archive_study(store, count)
        deidentifier = Deidentifier()
        raw = [store.get(obj.key) for obj in store.list_keys(f"sites/{SITE}/")]
        timed(
            "de-identify (in memory)",
            count,
            lambda: [deidentifier.deidentify_part10(b) for b in raw],
        )
        timed(
            "export --to folder",
            count,
            lambda: export_file_set(store, SITE, study, root / "plain", None, lambda r: None),
        )
        timed(
            "export --to folder --deidentify",
            count,
            lambda: export_file_set(
                store, SITE, study, root / "deid", deidentifier, lambda r: None
            ),
        )
        # The shim of running_storescp binds storescp to 127.0.0.1, which dcmtk cannot choose.
        with running_storescp(root / "scp", "BENCH") as scp:
            settings = ForwardSettings(calling_ae_title="CIRRUS")
            peer = Peer("BENCH", "127.0.0.1", scp.port)
            timed(
                "export --to-dimse (storescp)",
                count,
                lambda: forward_study(store, SITE, study, peer, None, settings, lambda r: None),
            )


if __name__ == "__main__":
    main()
