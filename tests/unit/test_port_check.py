"""The pre-flight port check of the local stack binds as the gateway and Werkzeug bind."""

from __future__ import annotations

import socket

import pytest

from cirrus.local.stack import StartError, _check_port_free


def _leave_time_wait() -> int:
    """Return a loopback port with a connection in TIME-WAIT and no listener.

    The listener sets SO_REUSEADDR like the real servers, and Linux lets a later bind
    reuse a TIME-WAIT entry only when both sockets set it. The server side closes first,
    so the TIME-WAIT entry keeps the listening port.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()
            client.recv(1)  # wait for the FIN, then close the client side too
    return port


def test_time_wait_port_accepted() -> None:
    port = _leave_time_wait()
    with socket.socket() as plain:
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))  # the case the check must not reject
    _check_port_free("DICOM", "127.0.0.1", port)


def test_listening_port_rejected() -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        with pytest.raises(StartError, match=f"DICOM port 127.0.0.1:{port} cannot be bound"):
            _check_port_free("DICOM", "127.0.0.1", port)
