"""The ceiling of a pynetdicom Storage SCP on this machine: C-STOREs acknowledged unstored.

Starts a pynetdicom SCP on 127.0.0.1 that returns Success to every C-STORE without decoding
or keeping the data set, sends it synthetic CT instances (bench/cstore.py's generator) with
dcmtk's storescu over one association, and prints the median rate. Any gateway built on
pynetdicom stays below this rate, whatever it does with each instance.

    .venv/bin/python bench/null_sink.py --instances 400 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import synthetic_series

HOST = "127.0.0.1"
SUCCESS = 0x0000


def acknowledge(event: Any) -> int:
    return SUCCESS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=400, help="instances per repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions")
    args = parser.parse_args()

    ae = AE(ae_title="NULLSINK")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server((HOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, acknowledge)])
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = server.server_address[1]
    rates = []
    try:
        with tempfile.TemporaryDirectory() as work:
            _, files = synthetic_series(Path(work), args.instances, "NULLSINK")
            command = ["storescu", "-aec", "NULLSINK", HOST, str(port), *map(str, files)]
            for _ in range(args.repeat):
                started = time.perf_counter()
                subprocess.run(command, check=True, env={**os.environ, "TCP_NODELAY": "1"})
                rates.append(args.instances / (time.perf_counter() - started))
    finally:
        server.shutdown()
    print(f"{args.instances} CT instances of 512x512x16 bit, {args.repeat} repetitions")
    median = statistics.median(rates)
    print(f"pynetdicom SCP that stores nothing, 1 association: {median:.1f} inst/s")


if __name__ == "__main__":
    main()
