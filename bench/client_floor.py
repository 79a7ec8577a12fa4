"""The client side's CPU per AWS call on the local stack, against a server that does no work.

Each instance that the local stack ingests costs a few DynamoDB and SQS calls: the gateway's
SOP Instance UID claim (a conditional PutItem) and the notification that S3 would send (an SQS
SendMessage), then ingest's share of its batch's calls. Each call costs CPU in the client
(botocore builds, signs and sends the request and parses the response) and in the server.
This script measures the two apart. It sends each call through the clients that the stack
uses, first to a server on 127.0.0.1 that replies to every request at once with a fixed
response, then to the local stack's moto front. The client's figure is the CPU time of this
process per call; the server's is the moto process's user and system time per call, read from
/proc. Everything runs on 127.0.0.1.

    .venv/bin/python bench/client_floor.py --calls 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from cirrus.config import ResourceNames, Settings
from cirrus.local.moto_process import LOOPBACK, start_moto, use_local_credentials
from cirrus.local.resources import create_resources
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey

# A keep-alive HTTP/1.1 server that replies to the JSON protocol's calls below at once, with
# bodies shaped as AWS's: DynamoDB's PutItem and Query, SQS's SendMessage.
NULL_SERVER = """
import hashlib, json, socket, sys, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        target = self.headers.get("X-Amz-Target", "")
        if target.endswith(".SendMessage"):
            digest = hashlib.md5(request["MessageBody"].encode()).hexdigest()
            body = {"MD5OfMessageBody": digest, "MessageId": str(uuid.uuid4())}
        elif target.endswith(".Query"):
            body = {"Items": [], "Count": 0, "ScannedCount": 0}
        else:
            body = {}
        data = json.dumps(body).encode()
        self.send_response_only(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port={server.server_address[1]}", flush=True)
server.serve_forever()
"""
# The body of the notification that the local stack's object store sends, about this long.
NOTIFICATION = "x" * 900


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _calls(services: Services, queue_url: str) -> dict[str, Callable[[], object]]:
    """Return the calls to measure, each through the client that the local stack uses for it."""
    claims, model, sqs = services.claims, services.index_model, services.clients.sqs

    def claim() -> object:
        return claims.claim(InstanceKey("default", "1.2", "1.3", f"2.25.{uuid.uuid4().int}"))

    def send() -> object:
        return sqs.send_message(QueueUrl=queue_url, MessageBody=NOTIFICATION)

    def query() -> object:
        return list(model.query("default#1.2", limit=1))

    return {"claim (PutItem)": claim, "notification (SendMessage)": send, "Query": query}


def _measure(call: Callable[[], object], count: int, server_pid: int | None) -> tuple[float, float]:
    """Return the client's and the server's CPU ms per call of ``count`` calls."""
    for _ in range(20):
        call()
    server_before = _cpu_seconds(server_pid) if server_pid else 0.0
    before = time.process_time()
    for _ in range(count):
        call()
    client = (time.process_time() - before) / count * 1000
    server = (_cpu_seconds(server_pid) - server_before) / count * 1000 if server_pid else 0.0
    return client, server


def _settings(json_endpoint: str, endpoint: str) -> Settings:
    return Settings.for_names(
        ResourceNames(), endpoint_url=endpoint, json_endpoint_url=json_endpoint
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls of each kind per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both servers in turn")
    args = parser.parse_args()
    if args.calls < 20 or args.rounds < 1:
        parser.error("--calls must be at least 20 and --rounds at least 1")
    use_local_credentials()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

    null = subprocess.Popen([sys.executable, "-c", NULL_SERVER], stdout=subprocess.PIPE, text=True)
    moto = start_moto()
    try:
        assert null.stdout is not None
        null_url = f"http://{LOOPBACK}:{null.stdout.readline().strip().removeprefix('port=')}"
        moto_services = Services(create_resources(_settings(moto.front_url, moto.endpoint_url)))
        queue_url = moto_services.clients.sqs.get_queue_url(
            QueueName=moto_services.settings.ingest_queue
        )["QueueUrl"]
        null_services = Services(_settings(null_url, moto.endpoint_url))
        targets = {
            "no-work server": (_calls(null_services, queue_url), None),
            "moto front": (_calls(moto_services, queue_url), moto.process.pid),
        }

        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for target, (calls, pid) in targets.items():
                for name, call in calls.items():
                    figures.setdefault((name, target), []).append(_measure(call, args.calls, pid))
    finally:
        moto.stop()
        null.terminate()
        null.wait(timeout=30)

    print(f"CPU ms per call, median of {args.rounds} rounds of {args.calls} calls")
    print("| call | server | client CPU ms | server CPU ms |")
    print("| --- | --- | --- | --- |")
    for (name, target), runs in figures.items():
        client = statistics.median(run[0] for run in runs)
        server = statistics.median(run[1] for run in runs)
        server_column = f"{server:.2f}" if target == "moto front" else ""
        print(f"| {name} | {target} | {client:.2f} | {server_column} |")


if __name__ == "__main__":
    main()
