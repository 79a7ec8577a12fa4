"""Time and memory of parsing and ingesting each malformed input, and what bounds them.

Every input of ``tests/malformed.py`` (all seeds, every cut and damage), plus a few built to
push the limits, goes through the two paths that read untrusted bytes:

- write path: ``parse_instance`` of the whole object and ``check_header``, as STOW-RS and the
  gateway run them;
- ingest: ``read_header`` with ranged reads over an in-memory object and ``instance_metadata``.

For each input the script measures the best of ``--repeat`` wall-clock times of both paths
together, then the peak of Python allocations during one more run (tracemalloc, which also
counts the input's copies). It prints the maximum per kind of input and overall.

    .venv/bin/python bench/malformed.py --repeat 3
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tracemalloc
import warnings
import zlib
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cirrus.archive import check_header
from cirrus.dicom.dicomjson import instance_metadata
from cirrus.dicom.instance import parse_instance
from cirrus.errors import InvalidInstanceError
from cirrus.ingest import read_header
from tests.malformed import (
    CANNOT_UNDERSTAND,
    HUGE,
    MalformedInput,
    deflate,
    full_corpus,
    nested,
    seed,
)
from tests.unit.test_fuzz_instance import BytesReader

KEY = "default/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm"


def limit_inputs() -> list[MalformedInput]:
    """Return inputs that reach the parser's limits rather than the seeds' sizes."""
    ct = seed("CT_small.dcm")
    deflated = seed("image_dfl.dcm")
    header = ct.meta + ct.dataset[: ct.dataset.index(b"\xe0\x7f\x10\x00")]
    pixel_header = b"\xe0\x7f\x10\x00OW\x00\x00" + HUGE.to_bytes(4, "little")
    explicit = ct.encoding
    return [
        # 64 MiB of zeros deflate to about 64 KiB, which may inflate to 16 MiB at most.
        MalformedInput(
            "limits/deflate-bomb-64MiB",
            deflated.meta + deflate(bytes(64 * 1024**2)),
            CANNOT_UNDERSTAND,
        ),
        MalformedInput(
            "limits/pixel-data-4GiB-declared",
            header + pixel_header + bytes(1024),
            CANNOT_UNDERSTAND,
        ),
        MalformedInput(
            "limits/nested-10000-undefined",
            ct.with_dataset(nested(10_000, explicit, defined=False) + ct.dataset),
            CANNOT_UNDERSTAND,
        ),
        MalformedInput(
            "limits/valid-64MiB-pixel-data",
            header
            + b"\xe0\x7f\x10\x00OW\x00\x00"
            + (64 * 1024**2).to_bytes(4, "little")
            + bytes(64 * 1024**2),
            0,
        ),
    ]


def run_paths(data: bytes) -> None:
    """Run the write path's parse and check, then ingest's ranged header read."""
    try:
        check_header(parse_instance(data), "default")
    except InvalidInstanceError:
        pass
    try:
        header, _ = read_header(BytesReader(data), KEY)
    except InvalidInstanceError:
        return
    instance_metadata(header)


def measure(case: MalformedInput, repeat: int) -> tuple[float, int]:
    """Return the best time in seconds and the tracemalloc peak in bytes for one input."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run_paths(case.data)
        best = min(best, time.perf_counter() - started)
    tracemalloc.start()
    tracemalloc.reset_peak()
    run_paths(case.data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak


def kind_of(name: str) -> str:
    """Group an input's name by its kind of damage, without offsets and seed."""
    kind = name.split("/", 1)[1]
    for prefix in ("boundary", "in-header", "mid-value", "meta-boundary", "meta-mid-value",
                   "cut-at", "deflated-stream-cut"):  # fmt: skip
        if kind.startswith(prefix):
            return prefix
    return kind.split("/")[-1] if "/" in kind else kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per input")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pydicom warns about each invalid value
    logging.disable(logging.WARNING)  # and cirrus logs each element it leaves out
    cases = full_corpus() + limit_inputs()
    by_kind: dict[str, list[tuple[float, int, MalformedInput]]] = defaultdict(list)
    for case in cases:
        seconds, peak = measure(case, args.repeat)
        by_kind[kind_of(case.name)].append((seconds, peak, case))

    print(f"{len(cases)} inputs, best of {args.repeat} runs, zlib {zlib.ZLIB_VERSION}")
    print("| kind | inputs | max ms | max tracemalloc peak KiB | max input KiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, rows in sorted(by_kind.items()):
        seconds = max(row[0] for row in rows)
        peak = max(row[1] for row in rows)
        size = max(len(row[2].data) for row in rows)
        figures = f"{seconds * 1000:.1f} | {peak / 1024:.0f} | {size / 1024:.0f}"
        print(f"| {kind} | {len(rows)} | {figures} |")
    everything = [row for rows in by_kind.values() for row in rows]
    slowest = max(everything, key=lambda row: row[0])
    largest = max(everything, key=lambda row: row[1])
    print(f"slowest: {slowest[2].name}: {slowest[0] * 1000:.1f} ms")
    print(f"largest peak: {largest[2].name}: {largest[1] / 1024**2:.1f} MiB")
    seeds_only = [row for row in everything if not row[2].name.startswith("limits/")]
    print(
        f"corpus without limits/: max {max(r[0] for r in seeds_only) * 1000:.1f} ms, "
        f"max peak {max(r[1] for r in seeds_only) / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
