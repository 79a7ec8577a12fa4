"""moto in server mode, in a child process of its own so that it runs on a second core.

Run as ``python -m cirrus.local.moto_process``: the child binds 127.0.0.1 on two free ports,
moto's own server and the lean one of ``cirrus.local.moto_front`` for DynamoDB, SQS and
EventBridge. It prints ``port=N front=M`` on its first line and serves until its standard
input closes, which happens when the parent exits for any reason, SIGKILL included.
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
    # moto's own server, for every service.
    endpoint_url: str
    # The lean server of the same backends, for DynamoDB, SQS and EventBridge only.
    front_url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


LOCAL_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def use_local_credentials() -> None:
    """Replace any AWS credentials of this process with fake ones that only moto accepts.

    The local stack signs every request for moto on 127.0.0.1; with real credentials in the
    environment it would still reach only moto, but they have no reason to be read at all.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(LOCAL_CREDENTIALS)


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
    ports = dict(field.partition("=")[::2] for field in line.split())
    if not ports.get("port", "").isdigit() or not ports.get("front", "").isdigit():
        process.kill()
        raise RuntimeError(f"moto server failed to start (output {line!r})")
    return MotoProcess(
        process,
        f"http://{LOOPBACK}:{int(ports['port'])}",
        f"http://{LOOPBACK}:{int(ports['front'])}",
    )


def _serve() -> None:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from cirrus.local import moto_patches, moto_server_patches
    from cirrus.local.moto_front import start_front

    moto_patches.apply()
    moto_server_patches.apply()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    front, front_port = start_front(LOOPBACK)
    print(f"port={port} front={front_port}", flush=True)
    # The parent reads only the port line, so later output would fill the pipe and block this
    # process. It goes to standard error instead, which this process shares with its parent.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdin.read()  # returns at end of file: the parent has gone
    front.shutdown()
    server.stop()


if __name__ == "__main__":
    _serve()
