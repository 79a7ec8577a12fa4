"""CPU and latency of one QIDO-RS study search by PatientID on `cirrus dev`, checkouts in turn.

Each ``--checkout NAME=DIR`` starts its own ``cirrus dev`` from the repository at DIR (its
``layers/shared/python`` and root on PYTHONPATH), each on free ports on 127.0.0.1 in a new
temporary folder. The benchmark writes the same ``--studies`` fill studies of 2 instances
each into every stack with ``bench/versus_fill.py``'s direct fill, checks that every stack
returns the same body for the search (ports aside), and then sends
``GET /dicomweb/studies?PatientID=...`` in rounds. In each round every stack receives
``--per-round`` requests in a row from its own requests session, and the order of the
stacks reverses from round to round. The CPU figures are the user and system time of the
stack's process and of its moto child process per request. They are read from /proc before
and after each round, 0.3 s after the last response, so that the audit table writes that
follow the responses are counted. CPU time depends less on the load of other processes than
latency does. The table shows the median of the rounds for each figure.

    .venv/bin/python bench/qido_cpu.py --checkout old=/tmp/old --checkout new=. --rounds 14

The fill and the start of the stacks use the ``bench`` and ``tests`` packages of the first
checkout. Stop the benchmark with Ctrl-C; it stops the stacks that it started.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Seconds to wait after a round's last response, for the audit table writes that follow it.
SETTLE_SECONDS = 0.3
FILL_STUDY_INSTANCES = 2
WARM_UP_REQUESTS = 20


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time of process ``pid`` from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def moto_child(pid: int) -> int:
    """Return the pid of the moto process that the stack process ``pid`` started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == pid and b"cirrus.local.moto_process" in command:
            return int(entry.name)
    raise RuntimeError(f"no moto child process of the stack process {pid}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--checkout",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a name for the table and the repository folder to run cirrus dev from; repeat",
    )
    parser.add_argument("--studies", type=int, default=300, help="fill studies per stack")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of requests")
    parser.add_argument("--per-round", type=int, default=200, help="requests per stack and round")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    checkouts = [tuple(item.split("=", 1)) for item in args.checkout]
    if any(len(checkout) != 2 for checkout in checkouts):
        raise SystemExit("each --checkout must be NAME=DIR")
    first = str(Path(checkouts[0][1]).resolve())
    sys.path[:0] = [f"{first}/layers/shared/python", first]
    from bench.versus_fill import DirectFill, fill_study
    from tests.e2e.conftest import RunningStack, start_stack

    folder = Path(tempfile.mkdtemp(prefix="qido-cpu-"))
    stacks: dict[str, RunningStack] = {}
    try:
        for name, checkout in checkouts:
            root = str(Path(checkout).resolve())
            environment = {**os.environ, "PYTHONPATH": f"{root}/layers/shared/python:{root}"}
            stacks[name] = start_stack(folder / name, environment=environment)
        studies = [
            fill_study(number, FILL_STUDY_INSTANCES) for number in range(1, args.studies + 1)
        ]
        for stack in stacks.values():
            DirectFill.into_stack(stack.data_dir).add_all(studies)
        patient = studies[len(studies) // 2].patient_id
        measure(stacks, patient, args.rounds, args.per_round)
    finally:
        for stack in stacks.values():
            stack.stop()


def measure(stacks: dict[str, Any], patient: str, rounds: int, per_round: int) -> None:
    """Send the search to every stack in rounds and print the medians per request."""
    sessions = {name: requests.Session() for name in stacks}
    urls = {
        name: f"{stack.dicomweb_url}/studies?PatientID={patient}" for name, stack in stacks.items()
    }
    processes = {}
    bodies = {}
    for name, stack in stacks.items():
        pid = stack.process.pid
        processes[name] = (pid, moto_child(pid))
        for _ in range(WARM_UP_REQUESTS):
            response = sessions[name].get(urls[name])
            response.raise_for_status()
        port = str(stack.http_port)
        bodies[name] = json.loads(response.text.replace(port, "PORT"))
    if any(body != next(iter(bodies.values())) for body in bodies.values()):
        raise SystemExit("the stacks returned different bodies for the search")
    if len(next(iter(bodies.values()))) != 1:
        raise SystemExit("the search did not return exactly one study")

    figures: dict[str, dict[str, list[float]]] = {
        name: {"stack": [], "moto": [], "latency": []} for name in stacks
    }
    order = list(stacks)
    for round_number in range(rounds):
        for name in order if round_number % 2 == 0 else reversed(order):
            stack_pid, moto_pid = processes[name]
            before = cpu_seconds(stack_pid), cpu_seconds(moto_pid)
            latencies = []
            for _ in range(per_round):
                started = time.perf_counter()
                response = sessions[name].get(urls[name])
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
            time.sleep(SETTLE_SECONDS)
            figures[name]["stack"].append((cpu_seconds(stack_pid) - before[0]) / per_round * 1000)
            figures[name]["moto"].append((cpu_seconds(moto_pid) - before[1]) / per_round * 1000)
            figures[name]["latency"].append(statistics.median(latencies) * 1000)
        load = Path("/proc/loadavg").read_text().split()[0]
        print(f"round {round_number + 1} of {rounds} done, load average {load}", flush=True)

    print("| checkout | stack CPU ms | moto CPU ms | both | latency p50 ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in figures.items():
        both = [a + b for a, b in zip(values["stack"], values["moto"], strict=True)]
        print(
            f"| {name} | {statistics.median(values['stack']):.2f} "
            f"| {statistics.median(values['moto']):.2f} | {statistics.median(both):.2f} "
            f"| {statistics.median(values['latency']):.2f} |"
        )


if __name__ == "__main__":
    main()
