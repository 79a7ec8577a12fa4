"""moto's CPU per request through the local stack's front, before and after its direct dispatch.

One process applies the patches of ``cirrus.local.moto_patches`` and
``cirrus.local.moto_server_patches`` and starts two fronts of ``cirrus.local.moto_front`` on
the same moto backends:

- before: moto's own dispatch (``BotocoreStubber.process_request``), the standard library's
  header parsing, and moto's own update expression parsing, result expansion and name
  conversion, as the front ran them before the direct dispatch;
- after: the front as the local stack runs it.

boto3 clients send the hot requests of ingest to each front in turn, round by round. A round
is a conditional PutItem of a 30-attribute item, UpdateItem with ADD and SET, and
TransactWriteItems of two conditional Puts and an Update. Then come a Query of 10 items,
GetItem, BatchGetItem of two keys, SendMessage, SendMessageBatch of 5, ReceiveMessage of up
to 10 with DeleteMessageBatch, and PutEvents. The figure is the CPU time
(``time.thread_time``) of the front's thread that handled each request, from reading the
request to writing the response, so the clients' CPU and the load of other processes change
it little. Everything runs on 127.0.0.1.

    .venv/bin/python bench/moto_front.py --rounds 4 --requests 200

With ``--baseline-tree``, the figure is instead the CPU time of the whole moto process
(``python -m cirrus.local.moto_process``, from /proc) per round of requests, with the process
started from the given source tree and from this one in alternating runs. Each run starts a
new process.

    git worktree add /tmp/cirrus-main main
    .venv/bin/python bench/moto_front.py --baseline-tree /tmp/cirrus-main --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from moto.core import responses as core_responses
from moto.dynamodb import responses as dynamodb_responses
from moto.dynamodb.parsing import validators
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]
from moto.sqs import models as sqs_models

from cirrus.local import moto_front, moto_patches, moto_server_patches
from cirrus.local.moto_dispatch import dispatch, dispatch_through_moto
from cirrus.local.moto_process import LOOPBACK, use_local_credentials

VARIANTS = ("before", "after")
STATISTICS = {"median": statistics.median, "mean": statistics.mean}
TABLE = "bench"
ATTRIBUTES = {f"a{number}": {"S": "x" * 20} for number in range(30)}
INDEX = "by-g"

# The functions that the patches replace, as (owner, attribute name, moto's own function).
_MOTO_FUNCTIONS = [
    (UpdateExpressionParser, "make", UpdateExpressionParser.make),
    (validators, "deepcopy", validators.deepcopy),
    (dynamodb_responses, "dynamo_to_dict", dynamodb_responses.dynamo_to_dict),
    (sqs_models, "camelcase_to_underscores", sqs_models.camelcase_to_underscores),
    (core_responses, "camelcase_to_underscores", core_responses.camelcase_to_underscores),
]
# (variant, X-Amz-Target action, CPU seconds) of each request handled.
_samples: list[tuple[str, str, float]] = []


def _timed_handler(variant: str, parse_request: Callable[..., bool]) -> type[Any]:
    """Return a front handler class that records the CPU time of each request."""

    class Handler(moto_front._FrontHandler):
        def parse_request(self) -> bool:
            return parse_request(self)

        def handle_one_request(self) -> None:
            start = time.thread_time()
            try:
                super().handle_one_request()
            finally:
                elapsed = time.thread_time() - start
                headers = getattr(self, "headers", None)
                target = headers.get("X-Amz-Target") if headers is not None else None
                if target:
                    _samples.append((variant, target.rsplit(".", 1)[-1], elapsed))

    return Handler


def _start(variant: str) -> str:
    if variant == "before":
        handler = _timed_handler(variant, BaseHTTPRequestHandler.parse_request)
    else:
        handler = _timed_handler(variant, moto_front._FrontHandler.parse_request)
    server = moto_front._FrontServer((LOOPBACK, 0), handler)
    server.dispatch = dispatch_through_moto if variant == "before" else dispatch
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://{LOOPBACK}:{server.server_address[1]}"


@contextmanager
def _moto_functions(variant: str) -> Iterator[None]:
    """Put back moto's own functions of ``_MOTO_FUNCTIONS`` for the "before" runs."""
    if variant != "before":
        yield
        return
    patched = [(owner, name, getattr(owner, name)) for owner, name, _ in _MOTO_FUNCTIONS]
    for owner, name, function in _MOTO_FUNCTIONS:
        setattr(owner, name, function)
    try:
        yield
    finally:
        for owner, name, function in patched:
            setattr(owner, name, function)


class Workload:
    """The hot requests of ingest, sent by one set of clients to one front."""

    def __init__(self, url: str, queue_url: str, name: str) -> None:
        config = Config(retries={"max_attempts": 1})
        self.dynamodb = boto3.client("dynamodb", endpoint_url=url, config=config)
        self.sqs = boto3.client("sqs", endpoint_url=url, config=config)
        self.events = boto3.client("events", endpoint_url=url, config=config)
        self.queue_url = queue_url
        # The variant's name starts its sort keys, so the two workloads write different items.
        self.name = name
        self.number = 0

    def _instance(self, suffix: str) -> dict[str, Any]:
        number = self.number
        return {
            "pk": {"S": f"p{number % 20}"},
            "sk": {"S": f"{self.name}{number:08d}{suffix}"},
            "gpk": {"S": f"g{number % 5}"},
            "gsk": {"S": f"{number:08d}{suffix}"},
            **ATTRIBUTES,
        }

    def round(self) -> None:
        self.number += 1
        study_key = {"pk": {"S": f"p{self.number % 20}"}, "sk": {"S": "STUDY"}}
        counter = {
            "UpdateExpression": "ADD #c :n SET #v = :v",
            "ExpressionAttributeNames": {"#c": "count", "#v": "version"},
            "ExpressionAttributeValues": {":n": {"N": "1"}, ":v": {"S": f"v{self.number}"}},
        }
        not_exists = "attribute_not_exists(pk)"
        ddb = self.dynamodb
        ddb.put_item(TableName=TABLE, Item=self._instance("a"), ConditionExpression=not_exists)
        ddb.update_item(TableName=TABLE, Key=study_key, **counter)
        puts = [
            {
                "Put": {
                    "TableName": TABLE,
                    "Item": self._instance(s),
                    "ConditionExpression": not_exists,
                }
            }
            for s in ("b", "c")
        ]
        update = {"Update": {"TableName": TABLE, "Key": study_key, **counter}}
        ddb.transact_write_items(TransactItems=[*puts, update])
        ddb.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": study_key["pk"]},
            Limit=10,
        )
        ddb.get_item(TableName=TABLE, Key=study_key, ConsistentRead=True)
        other_key = {"pk": {"S": f"p{(self.number + 1) % 20}"}, "sk": {"S": "STUDY"}}
        ddb.batch_get_item(
            RequestItems={TABLE: {"Keys": [study_key, other_key], "ConsistentRead": True}}
        )

        body = json.dumps({"key": f"objects/{self.number:08d}.dcm", "size": 525000})
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        entries = [{"Id": str(n), "MessageBody": body} for n in range(5)]
        self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        # Six messages sent and up to ten received per round keep the backlog small.
        received = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        messages = received.get("Messages", [])
        if messages:
            deletes = [
                {"Id": str(n), "ReceiptHandle": message["ReceiptHandle"]}
                for n, message in enumerate(messages)
            ]
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=deletes)
        event = {"Source": "cirrus.bench", "DetailType": "Object Created", "Detail": body}
        self.events.put_events(Entries=[event])


def _create_resources(url: str) -> str:
    ddb = boto3.client("dynamodb", endpoint_url=url)
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "gpk", "gsk")
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": INDEX,
                "KeySchema": [
                    {"AttributeName": "gpk", "KeyType": "HASH"},
                    {"AttributeName": "gsk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return str(boto3.client("sqs", endpoint_url=url).create_queue(QueueName=TABLE)["QueueUrl"])


def _process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_run(tree: Path, requests: int) -> float:
    """Return moto's process CPU ms per round of requests, with moto started from ``tree``."""
    environment = {**os.environ, "PYTHONPATH": f"{tree / 'layers/shared/python'}:{tree}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cirrus.local.moto_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=tree,
    )
    try:
        assert process.stdout is not None
        ports = dict(field.split("=", 1) for field in process.stdout.readline().split())
        url = f"http://{LOOPBACK}:{int(ports['front'])}"
        workload = Workload(url, _create_resources(url), "run")
        # The first requests of each kind load botocore's service models into moto.
        for _ in range(10):
            workload.round()
        before = _process_cpu_seconds(process.pid)
        for _ in range(requests):
            workload.round()
        return (_process_cpu_seconds(process.pid) - before) / requests * 1000
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=30)


def compare_processes(baseline: Path, rounds: int, requests: int) -> None:
    trees = {"baseline": baseline.resolve(), "this tree": Path(__file__).resolve().parents[1]}
    runs: dict[str, list[float]] = {name: [] for name in trees}
    for number in range(rounds):
        order = list(trees) if number % 2 == 0 else list(trees)[::-1]
        for name in order:
            runs[name].append(_process_run(trees[name], requests))
    print(f"moto process CPU ms per round, {rounds} runs of {requests} rounds")
    for name, figures in runs.items():
        listed = ", ".join(f"{figure:.2f}" for figure in figures)
        print(f"  {name:10} median {statistics.median(figures):7.2f}  runs {listed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200, help="rounds of requests per run")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each variant, in turn")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="a source tree to compare whole moto processes with, such as a worktree of main",
    )
    args = parser.parse_args()
    if args.requests < 10 or args.rounds < 1:
        parser.error("--requests must be at least 10 and --rounds at least 1")
    use_local_credentials()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    if args.baseline_tree is not None:
        if not (args.baseline_tree / "layers/shared/python/cirrus/local").is_dir():
            parser.error(f"--baseline-tree {args.baseline_tree} has no layers/shared/python/cirrus")
        compare_processes(args.baseline_tree, args.rounds, args.requests)
        return
    moto_patches.apply()
    moto_server_patches.apply()
    urls = {variant: _start(variant) for variant in VARIANTS}
    queue_url = _create_resources(urls["after"])
    workloads = {variant: Workload(urls[variant], queue_url, variant) for variant in VARIANTS}
    for workload in workloads.values():
        workload.round()

    # The median and the mean CPU ms of each action in each run, by variant.
    runs: dict[str, list[dict[tuple[str, str], float]]] = {variant: [] for variant in VARIANTS}
    for number in range(args.rounds):
        # The table grows during the runs, so the order of the variants alternates.
        order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            _samples.clear()
            with _moto_functions(variant):
                for _ in range(args.requests):
                    workloads[variant].round()
            # The last response can reach the client before its handler has recorded it.
            time.sleep(0.2)
            by_action: dict[str, list[float]] = {}
            for sample_variant, action, seconds in _samples:
                if sample_variant == variant:
                    by_action.setdefault(action, []).append(seconds)
            runs[variant].append(
                {
                    (action, name): statistic(times) * 1000
                    for action, times in by_action.items()
                    for name, statistic in STATISTICS.items()
                }
            )

    # A garbage collection of the whole heap, moto's tables included, now and then adds
    # tens of milliseconds to one request, which moves the mean more than the median.
    print(f"moto CPU ms per request, median over {args.rounds} runs of {args.requests} rounds")
    print(
        f"  {'action':20}"
        + "".join(f" {name + ' ' + v:>14}" for name in STATISTICS for v in VARIANTS)
    )
    for action in sorted({action for action, _ in runs["after"][0]}):
        figures = [
            statistics.median(run[(action, name)] for run in runs[variant])
            for name in STATISTICS
            for variant in VARIANTS
        ]
        print(f"  {action:20}" + "".join(f" {figure:14.3f}" for figure in figures))


if __name__ == "__main__":
    main()
