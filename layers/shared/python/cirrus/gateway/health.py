"""The HTTP health check of the gateway, for the load balancer in front of it.

``GET /health`` (or ``HEAD``) returns 200 while the gateway accepts associations and 503 once it
drains at shutdown, with a small JSON body: ``{"status": "serving" | "draining",
"associations": N}``. A target group's HTTP health check on this port therefore takes a
draining task out of service before its DICOM listener closes. A TCP health check on the
DICOM port works too, because the gateway closes that listener as soon as it drains and ends
connections that send no association request (``cirrus.gateway.server``). It only notices a
draining task later, when the listener has closed.

The server binds its own port (8081 unless configured) and serves one request per thread.
It logs nothing per request, because load balancers check every few seconds.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

logger = logging.getLogger(__name__)

DEFAULT_HEALTH_PORT: Final = 8081
HEALTH_PATH: Final = "/health"


@dataclass(frozen=True)
class HealthState:
    serving: bool
    associations: int


class HealthServer:
    """An HTTP server that reports ``state()`` on ``HEALTH_PATH``, in a background thread."""

    def __init__(self, host: str, port: int, state: Callable[[], HealthState]) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_for(state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gateway-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def start(self) -> None:
        self._thread.start()
        logger.info(
            "health check listening on %s:%d",
            self.host,
            self.port,
            extra={"host": self.host, "port": self.port, "path": HEALTH_PATH},
        )

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def _handler_for(state: Callable[[], HealthState]) -> type[BaseHTTPRequestHandler]:
    class HealthHandler(BaseHTTPRequestHandler):
        server_version = "cirrus-gateway"

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def _respond(self, send_body: bool) -> None:
            if self.path.split("?", 1)[0] != HEALTH_PATH:
                status = HTTPStatus.NOT_FOUND
                body = json.dumps({"error": f"not found; the health check is {HEALTH_PATH}"})
            else:
                current = state()
                status = HTTPStatus.OK if current.serving else HTTPStatus.SERVICE_UNAVAILABLE
                body = json.dumps(
                    {
                        "status": "serving" if current.serving else "draining",
                        "associations": current.associations,
                    }
                )
            encoded = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(encoded)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return HealthHandler
