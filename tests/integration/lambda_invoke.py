"""A Lambda Invoke endpoint on 127.0.0.1 that runs one handler in this process, for tests.

moto's Lambda needs Docker to run a function, which these machines lack. This server handles
the request that boto3 sends for ``invoke`` (``POST /2015-03-31/functions/{name}/invocations``)
by calling the handler with the decoded event and a context object, and replies as Lambda
does: the result as JSON, or on an exception a status of 200 with ``X-Amz-Function-Error:
Unhandled`` and an ``errorMessage``/``errorType`` payload. ``GET /invocations`` returns how
many invocations it ran.

Run as ``python -m tests.integration.lambda_invoke MODULE:FUNCTION``. It prints the port it
listens on, then serves until it is terminated. The handler reads its settings from the
environment, as in Lambda.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INVOKE_PATH_PREFIX = "/2015-03-31/functions/"


@dataclass
class Context:
    """The attributes of a Lambda context that powertools reads."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def serve(handler: Callable[[Any, Any], Any]) -> ThreadingHTTPServer:
    """Return a server on a free port of 127.0.0.1 that invokes ``handler``; not started."""
    count = {"invocations": 0}
    lock = threading.Lock()

    class Invoke(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if not (
                self.path.startswith(INVOKE_PATH_PREFIX) and self.path.endswith("/invocations")
            ):
                self._reply(404, {"message": "not an invoke path"})
                return
            name = self.path[len(INVOKE_PATH_PREFIX) :].split("/")[0]
            event = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with lock:
                count["invocations"] += 1
            try:
                result = handler(event, Context(function_name=name))
            except Exception as exc:
                error = {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "stackTrace": traceback.format_tb(exc.__traceback__),
                }
                self._reply(200, error, {"X-Amz-Function-Error": "Unhandled"})
                return
            self._reply(200, result)

        def do_GET(self) -> None:
            with lock:
                self._reply(200, dict(count))

        def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # Quiet: requests carry UIDs and the test output has no use for them.

    return ThreadingHTTPServer(("127.0.0.1", 0), Invoke)


def main() -> int:
    module_name, _, function_name = sys.argv[1].partition(":")
    handler = getattr(importlib.import_module(module_name), function_name)
    server = serve(handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
