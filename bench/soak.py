"""Soak the local stack: parallel C-STORE and STOW-RS under continuous QIDO and WADO-RS.

Starts ``cirrus dev`` as a child process with its own data folder in a temporary directory
and free ports on 127.0.0.1, runs ``tests/e2e/soak.py`` and stops the stack by its PID. The
instances are synthetic CT images (16 bit, ``--rows`` square, explicit VR little endian) from
bench/cstore.py's generator. They go over ``--associations`` pynetdicom associations and
``--stow-senders`` STOW-RS senders at once. Meanwhile ``--readers`` threads run QIDO-RS
series searches, WADO-RS series metadata and WADO-RS instance retrieves on acknowledged
instances.

Afterwards it checks that every acknowledged instance is in the data folder and counted by
QIDO in its study and series, that no response had a 5xx status, and that the stack still
runs with no traceback in its log. It prints throughput, p50 and p95 latency per operation,
and the load average, and exits with 1 if a check failed.

    .venv/bin/python bench/soak.py --instances 10000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.conftest import start_stack
from tests.e2e.soak import SoakConfig, check_soak, run_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=10_000, help="instances to send")
    parser.add_argument("--associations", type=int, default=8, help="parallel C-STORE associations")
    parser.add_argument("--stow-senders", type=int, default=1, help="parallel STOW-RS senders")
    parser.add_argument("--stow-batch", type=int, default=5, help="instances per STOW-RS request")
    parser.add_argument("--series-size", type=int, default=50, help="instances per series")
    parser.add_argument("--rows", type=int, default=128, help="rows and columns of each image")
    parser.add_argument("--readers", type=int, default=2, help="QIDO and WADO-RS reader threads")
    parser.add_argument(
        "--indexed-timeout", type=float, default=900.0, help="seconds to wait for indexing"
    )
    parser.add_argument("--log", type=Path, help="file to write the stack's output to")
    args = parser.parse_args()
    config = SoakConfig(
        instances=args.instances,
        associations=args.associations,
        stow_senders=args.stow_senders,
        stow_batch=args.stow_batch,
        series_size=args.series_size,
        rows=args.rows,
        readers=args.readers,
        indexed_timeout=args.indexed_timeout,
    )
    work = Path(tempfile.mkdtemp(prefix="cirrus-soak-"))
    stack = start_stack(work / "data")
    try:
        result = run_soak(stack, config)
        problems = check_soak(stack, result)
    finally:
        code = stack.stop()
        shutil.rmtree(work, ignore_errors=True)
        if args.log is not None:
            stack.wait_for_output_end()
            args.log.write_text("\n".join(stack.lines) + "\n")
    for line in result.summary():
        print(line)
    print(f"stack exit code {code}")
    lost = result.config.instances - result.acknowledged_count
    print(f"not acknowledged: {lost}; problems: {len(problems)}")
    for problem in problems[:20]:
        print(f"  {problem}")
    return 1 if problems or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
