"""The ``cirrus`` command line."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from cirrus.config import DEFAULT_AE_TITLE
from cirrus.local.moto_process import LOOPBACK

app = typer.Typer(help="Cirrus PACS: a serverless DICOM archive.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Cirrus PACS: a serverless DICOM archive."""


@app.command()
def dev(
    dicom_port: Annotated[int, typer.Option(help="TCP port of the DICOM gateway.")] = 11112,
    http_port: Annotated[int, typer.Option(help="TCP port of DICOMweb and the viewer.")] = 8080,
    ae_title: Annotated[str, typer.Option(help="AE title the gateway answers to.")] = (
        DEFAULT_AE_TITLE
    ),
    data_dir: Annotated[
        Path, typer.Option(help="Folder that keeps stored objects across restarts.")
    ] = Path(".cirrus"),
    host: Annotated[
        str, typer.Option(help="Address both servers bind; other addresses expose the archive.")
    ] = LOOPBACK,
) -> None:
    """Run the whole stack on this machine until Ctrl-C."""
    from cirrus.local.stack import LocalStack, LocalStackConfig
    from cirrus.logs import configure_console_logging

    configure_console_logging()
    if host != LOOPBACK:
        logging.getLogger("cirrus.local").warning(
            "binding a non-loopback address: the archive accepts unauthenticated requests",
            extra={"host": host},
        )
    stack = LocalStack(
        LocalStackConfig(
            host=host,
            dicom_port=dicom_port,
            http_port=http_port,
            ae_title=ae_title,
            data_dir=data_dir,
        )
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    stack.start()
    try:
        stopping.wait()
    finally:
        stack.stop()


if __name__ == "__main__":
    app()
