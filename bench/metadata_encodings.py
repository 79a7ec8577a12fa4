"""Series metadata with and without gzip on the local stack, the two requests taking turns.

Loads one series of ``--instances`` CT instances (512x512, 16 bit) into ``cirrus dev`` by
C-STORE, as ``bench/versus_read.py`` loads its target series, then optionally adds studies of
100 small instances until ``--fill`` more are stored. It then sends
``GET /studies/{study}/series/{series}/metadata`` with ``Accept-Encoding: gzip`` and with
``identity`` in turn, ``--runs`` times each, after one untimed request that builds the
bundle. Alternating the two makes a change of the machine's load reach both alike, which
separate rows of ``bench/versus_read.py`` do not.

Each request is timed twice over: as ``bench/versus_read.py`` times it (python requests, from
sending to the decoded JSON), and as the server delivers it (http.client, from sending to the
last body byte, without decoding). The script checks ``Content-Encoding``, ``Vary`` and the
two ETags, and prints the medians and the load average.

    .venv/bin/python bench/metadata_encodings.py --instances 1000 --fill 2000 --runs 31

Everything listens on 127.0.0.1, and the stack is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import send
from bench.versus_read import _wait_for_study, _write_series, cirrus_stack_options
from tests.e2e.conftest import RunningStack, start_stack

ASSOCIATIONS: Final = 4
FILL_STUDY_SIZE: Final = 100
ENCODINGS: Final = ("gzip", "identity")
DICOM_JSON: Final = "application/dicom+json"


def load(stack: RunningStack, folder: Path, instances: int, fill: int) -> tuple[str, str]:
    """Store the target series and the fill studies; return the target's study and series."""
    study, series, paths = _write_series(
        folder / "target", instances, "BENCHREAD-1", "BENCHREAD^1", 512
    )
    send(stack.dicom_port, "CIRRUS", paths, ASSOCIATIONS)
    _wait_for_study(stack.dicomweb_url, study, instances, "Cirrus")
    shutil.rmtree(folder / "target", ignore_errors=True)
    for batch in range(fill // FILL_STUDY_SIZE):
        fill_study, _, fill_paths = _write_series(
            folder / "fill", FILL_STUDY_SIZE, f"FILL{batch:06d}", f"FILL^{batch:06d}", 64
        )
        send(stack.dicom_port, "CIRRUS", fill_paths, ASSOCIATIONS)
        _wait_for_study(stack.dicomweb_url, fill_study, FILL_STUDY_SIZE, "Cirrus")
        shutil.rmtree(folder / "fill", ignore_errors=True)
    return study, series


def client_time(session: requests.Session, url: str, encoding: str, count: int) -> float:
    """Return the seconds until the decoded JSON of one request; check its headers and size."""
    started = time.perf_counter()
    response = session.get(url, headers={"Accept": DICOM_JSON, "Accept-Encoding": encoding})
    if response.status_code != 200:
        raise RuntimeError(f"{encoding} request failed with {response.status_code}")
    items = response.json()
    elapsed = time.perf_counter() - started
    check_headers(encoding, response.headers)
    if len(items) != count:
        raise RuntimeError(f"{encoding} request listed {len(items)} instances, not {count}")
    return elapsed


def server_time(port: int, path: str, encoding: str) -> tuple[float, int]:
    """Return the seconds until the last body byte of one request, and the body's size."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers={"Accept": DICOM_JSON, "Accept-Encoding": encoding})
        response = connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"{encoding} request failed with {response.status}")
    return elapsed, len(body)


def check_headers(encoding: str, headers: requests.structures.CaseInsensitiveDict[str]) -> None:
    coding = headers.get("Content-Encoding", "identity")
    if coding != encoding:
        raise RuntimeError(f"{encoding} request was served with Content-Encoding {coding}")
    if headers.get("Vary") != "Accept-Encoding":
        raise RuntimeError(f"{encoding} response has Vary {headers.get('Vary')!r}")
    etag = headers.get("ETag", "")
    if etag.endswith('.gz"') != (encoding == "gzip"):
        raise RuntimeError(f"{encoding} response has the ETag of the other coding: {etag}")


def measure(stack: RunningStack, study: str, series: str, count: int, runs: int) -> None:
    path = f"/dicomweb/studies/{study}/series/{series}/metadata"
    url = f"http://127.0.0.1:{stack.http_port}{path}"
    client: dict[str, list[float]] = {encoding: [] for encoding in ENCODINGS}
    server: dict[str, list[float]] = {encoding: [] for encoding in ENCODINGS}
    sizes: dict[str, int] = {}
    with requests.Session() as session:
        started = time.perf_counter()
        client_time(session, url, "gzip", count)
        print(f"first request (builds the bundle): {time.perf_counter() - started:.1f} s")
        print(f"load average at the start: {os.getloadavg()}", flush=True)
        for run in range(runs):
            order = ENCODINGS if run % 2 == 0 else ENCODINGS[::-1]
            for encoding in order:
                client[encoding].append(client_time(session, url, encoding, count))
                seconds, sizes[encoding] = server_time(stack.http_port, path, encoding)
                server[encoding].append(seconds)
    print(f"load average at the end: {os.getloadavg()}")
    print(f"{count} instances, {runs} requests of each kind per coding")
    for encoding in ENCODINGS:
        print(
            f"{encoding:>8}: body {sizes[encoding] / 1024:7.0f} KiB, "
            f"client median {statistics.median(client[encoding]) * 1000:7.1f} ms, "
            f"server median {statistics.median(server[encoding]) * 1000:7.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000, help="instances of the series")
    parser.add_argument(
        "--fill", type=int, default=0, help="instances stored in other studies besides it"
    )
    parser.add_argument("--runs", type=int, default=31, help="timed requests per coding")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cirrus-metadata-encodings-"))
    stack = start_stack(work / "cirrus", *cirrus_stack_options(work))
    try:
        started = time.perf_counter()
        study, series = load(stack, work, args.instances, args.fill)
        stored = args.instances + args.fill
        print(f"{stored} instances stored in {time.perf_counter() - started:.0f} s", flush=True)
        measure(stack, study, series, args.instances, args.runs)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
