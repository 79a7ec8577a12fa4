"""moto in server mode, in a child process of its own so that it runs on a second core.

Run as ``python -m cirrus.local.moto_process``: the child binds 127.0.0.1 on a free port,
prints ``port=N`` on its first line and serves until its standard input closes, which
happens when the parent exits for any reason, SIGKILL included.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Final

LOOPBACK: Final = "127.0.0.1"


@dataclass
class MotoProcess:
    process: subprocess.Popen[str]
    endpoint_url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_moto() -> MotoProcess:
    """Start moto in a child process and return once it accepts requests."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cirrus.local.moto_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("port="):
        process.kill()
        raise RuntimeError(f"moto server failed to start (output {line!r})")
    return MotoProcess(process, f"http://{LOOPBACK}:{int(line.removeprefix('port='))}")


def _serve() -> None:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(f"port={port}", flush=True)
    sys.stdin.read()  # returns at end of file: the parent has gone
    server.stop()


if __name__ == "__main__":
    _serve()
