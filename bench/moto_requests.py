"""moto's CPU per DynamoDB request, with and without the local stack's response patch.

Each round starts the local stack's moto server twice, with every patch of
``cirrus.local.moto_patches`` and ``cirrus.local.moto_server_patches``: once with moto's own
response serializer put back, once as the stack runs it. One boto3 client sends each server
the same requests: PutItems of index-sized items (30 string attributes) into 20 partitions,
then Queries of 25 of them. The
figure is the server process's user and system CPU per request, read from /proc, so the load
of other processes changes it less than it changes latency. Everything runs on 127.0.0.1.

    .venv/bin/python bench/moto_requests.py --requests 400 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

import boto3

from cirrus.local.moto_process import LOOPBACK, use_local_credentials

# The server of ``cirrus.local.moto_process``, with the serializer of moto's DynamoDB results
# restored when its argument is "serializer".
SERVER = """
import logging, sys
from moto.dynamodb.responses import DynamoResult
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from cirrus.local import moto_patches, moto_server_patches
serializer = DynamoResult.execute_result
moto_patches.apply()
moto_server_patches.apply()
if sys.argv[1] == "serializer":
    DynamoResult.execute_result = serializer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(f"port={server.get_host_and_port()[1]}", flush=True)
sys.stdin.read()
server.stop()
"""
VARIANTS = ("serializer", "patched")
ATTRIBUTES = {f"a{number}": {"S": "x" * 20} for number in range(30)}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu_ms(pid: int, count: int, request: Callable[[int], object]) -> float:
    before = _cpu_seconds(pid)
    for number in range(count):
        request(number)
    return (_cpu_seconds(pid) - before) / count * 1000


def measure(variant: str, count: int) -> dict[str, float]:
    """Return moto's CPU ms per PutItem and per Query of 25 items, for one server."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, variant],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().strip().removeprefix("port="))
        client = boto3.client("dynamodb", endpoint_url=f"http://{LOOPBACK}:{port}")
        client.create_table(
            TableName="bench",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )

        def put(number: int) -> object:
            key = {"pk": {"S": f"p{number % 20}"}, "sk": {"S": f"s{number:06d}"}}
            return client.put_item(TableName="bench", Item={**key, **ATTRIBUTES})

        def query(number: int) -> object:
            return client.query(
                TableName="bench",
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"p{number % 20}"}},
                Limit=25,
            )

        return {
            "PutItem": _server_cpu_ms(server.pid, count, put),
            "Query of 25": _server_cpu_ms(server.pid, count, query),
        }
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=400, help="requests of each kind")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both servers in turn")
    args = parser.parse_args()
    if args.requests < 20 or args.rounds < 1:
        parser.error("--requests must be at least 20 and --rounds at least 1")
    use_local_credentials()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            runs[variant].append(measure(variant, args.requests))
    print("moto CPU ms per request, median of", args.rounds, "rounds")
    for variant, results in runs.items():
        figures = {name: statistics.median(run[name] for run in results) for name in results[0]}
        print(f"  {variant:10}", "  ".join(f"{name} {ms:.2f}" for name, ms in figures.items()))


if __name__ == "__main__":
    main()
