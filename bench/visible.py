"""Time from a C-STORE acknowledgement until QIDO-RS finds the instance, on the local stack.

One pynetdicom association sends one new instance per trial (a synthetic 512x512 CT of
bench/cstore.py) to ``cirrus dev``. The clock starts when the C-STORE response arrives. The
benchmark then polls ``GET /instances?SOPInstanceUID=...`` over one keep-alive HTTP connection
until the instance is listed, and prints the median and 95th percentile (nearest rank) of the
trials. Orthanc indexes an instance before it acknowledges it, so its time is zero.

    .venv/bin/python bench/visible.py --trials 100

The stack listens on 127.0.0.1 only and is stopped by its PID when the benchmark ends.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import synthetic_ct
from tests.e2e.conftest import start_stack

# Between two QIDO requests while an instance is not yet listed.
POLL_INTERVAL_SECONDS = 0.005
VISIBLE_TIMEOUT_SECONDS = 30.0


def nearest_rank(values: list[float], percentile: float) -> float:
    """Return the nearest-rank ``percentile`` (0 to 100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percentile / 100 * len(ordered)) - 1)]


def wait_listed(session: requests.Session, url: str, sop_uid: str) -> None:
    """Poll QIDO-RS until the instance ``sop_uid`` is listed."""
    deadline = time.perf_counter() + VISIBLE_TIMEOUT_SECONDS
    while time.perf_counter() < deadline:
        response = session.get(
            f"{url}/instances",
            params={"SOPInstanceUID": sop_uid},
            headers={"Accept": "application/dicom+json"},
        )
        if response.status_code == 200 and response.content and response.json():
            return
        time.sleep(POLL_INTERVAL_SECONDS)
    raise RuntimeError(f"instance {sop_uid} not listed by QIDO-RS after 30 s")


def measure(port: int, dicomweb_url: str, trials: int, pause: float) -> list[float]:
    """Store ``trials`` new instances one by one; return the seconds until each was listed."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = np.random.default_rng(1).integers(-1000, 2000, size=(512, 512), dtype=np.int16)
    ae = AE(ae_title="VISIBLE")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="CIRRUS")
    if not assoc.is_established:
        raise RuntimeError(f"association with the gateway on port {port} was not accepted")
    session = requests.Session()
    seconds = []
    try:
        for number in range(1, trials + 1):
            ds = synthetic_ct(study, series, frame, number, "BENCHVISIBLE", pixels)
            status = assoc.send_c_store(ds)
            acknowledged = time.perf_counter()
            if getattr(status, "Status", None) != 0x0000:
                raise RuntimeError(f"C-STORE of instance {number} failed with {status}")
            wait_listed(session, dicomweb_url, str(ds.SOPInstanceUID))
            seconds.append(time.perf_counter() - acknowledged)
            time.sleep(pause)
    finally:
        assoc.release()
        session.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="instances, one per trial")
    parser.add_argument(
        "--pause", type=float, default=0.2, help="seconds between trials, after each is listed"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cirrus-visible-bench-"))
    try:
        stack = start_stack(work / "cirrus")
        try:
            seconds = measure(stack.dicom_port, stack.dicomweb_url, args.trials, args.pause)
        finally:
            stack.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    milliseconds = [1000 * value for value in seconds]
    print(
        f"C-STORE acknowledgement to listed by QIDO-RS, {args.trials} trials, "
        f"load average {os.getloadavg()[0]:.2f}:"
    )
    print(f"  p50 {statistics.median(milliseconds):.1f} ms")
    print(f"  p95 {nearest_rank(milliseconds, 95):.1f} ms")
    print(f"  max {max(milliseconds):.1f} ms")


if __name__ == "__main__":
    main()
