"""moto with two fronts on the same backends: moto's own dispatch and the direct one.

Run as ``python -m tests.integration.moto_fronts_worker``. It applies the local stack's
patches as ``cirrus.local.moto_process`` does, prints ``moto=N direct=M through_moto=K`` (the
ports of moto's own server and of the two fronts) and serves until its standard input closes.
"""

from __future__ import annotations

import sys

from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from cirrus.local import moto_patches, moto_server_patches
from cirrus.local.moto_front import start_front
from cirrus.local.moto_process import LOOPBACK


def main() -> None:
    moto_patches.apply()
    moto_server_patches.apply()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    direct, direct_port = start_front(LOOPBACK)
    through_moto, moto_port = start_front(LOOPBACK, through_moto=True)
    print(
        f"moto={server.get_host_and_port()[1]} direct={direct_port} through_moto={moto_port}",
        flush=True,
    )
    sys.stdin.read()
    direct.shutdown()
    through_moto.shutdown()
    server.stop()


if __name__ == "__main__":
    main()
