"""Import time of the Lambda handler modules with the built layers, as a cold start pays it.

For each function, runs ``python3.12 -S -X importtime -c "import MODULE"`` in a fresh
interpreter several times and reports the median cumulative import time of its handler
module. ``sys.path`` contains only the standard library and what Lambda would mount for that
function: the function code, the shared layer and the core dependency layer, and for the
DICOMweb pixel function the pixel layer too, which runs the DICOMweb handler.
``cirrus_infra.layer_build`` builds them as the CDK app does, but for this machine's
architecture, so that the interpreter can load the wheels.
``PYTHONDONTWRITEBYTECODE`` is set because Lambda's code and layers are read-only. The
environment names a Lambda function, so powertools' Tracer starts and patches botocore as it
does in Lambda.

The layers are built twice, with and without bytecode, because Lambda cannot write
``__pycache__`` and compiles every imported module at each cold start when the layer has
none. Needs a CPython 3.12 (``--python``, ``CIRRUS_LAYER_PYTHON`` or ``python3.12`` on PATH).

    CIRRUS_LAYER_PYTHON=/path/to/python3.12 .venv/bin/python bench/import_time.py --runs 7
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The module alone: the cirrus_infra package would start the CDK's jsii runtime.
sys.path.insert(0, str(REPO / "infra" / "cirrus_infra"))

import layer_build  # noqa: E402

# Each function: its handler module, its service name and whether it has the pixel layer.
FUNCTIONS = {
    "ingest": ("functions.ingest.handler", "cirrus-ingest", False),
    "DICOMweb": ("functions.dicomweb.handler", "cirrus-dicomweb", False),
    "DICOMweb pixel": ("functions.dicomweb.handler", "cirrus-dicomweb", True),
}
TARGET_MS = 300
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")
# Lambda architecture names of the machines that this benchmark can run the wheels of.
_HOST_ARCHITECTURES = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def build_paths(interpreter: str | None) -> tuple[list[Path], Path]:
    """Build the layers and code for this machine.

    Returns the folders of ``sys.path`` of a function without the pixel layer, and the pixel
    layer's folder, which the pixel function has after them.
    """
    architecture = _HOST_ARCHITECTURES[platform.machine()]
    core = layer_build.build_dependencies(
        layer_build.CORE_REQUIREMENTS, architecture, interpreter=interpreter
    )
    pixels = layer_build.build_dependencies(
        layer_build.PIXEL_REQUIREMENTS,
        architecture,
        base=layer_build.CORE_REQUIREMENTS,
        interpreter=interpreter,
    )
    shared = layer_build.build_sources(
        "bench-shared", [(REPO / "layers" / "shared" / "python", "python")], interpreter=interpreter
    )
    entries = [(REPO / "functions", "functions")]
    code = layer_build.build_sources("bench-code", entries, interpreter=interpreter)
    return [code, shared / "python", core / "python"], pixels / "python"


def measure(python: str, module: str, service: str, path: list[Path]) -> tuple[int, dict[str, int]]:
    """Import ``module`` once; return its cumulative microseconds and self time per package."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(str(folder) for folder in path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(path[0]),
        "AWS_LAMBDA_FUNCTION_NAME": "import-time-bench",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        # Nothing is sent at import; the address is only configured.
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": "Cirrus",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    result = subprocess.run(
        [python, "-S", "-X", "importtime", "-c", f"import {module}"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"import of {module} failed:\n{result.stderr[-3000:]}")
    total = 0
    packages: dict[str, int] = collections.Counter()
    for line in result.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match is None:
            continue
        name = match.group(4)
        packages[name.split(".")[0]] += int(match.group(1))
        if name == module and not match.group(3):
            total = int(match.group(2))
    return total, packages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="imports per function and variant")
    parser.add_argument("--python", help="CPython 3.12 to import with (default: discovered)")
    parser.add_argument("--top", type=int, default=10, help="packages listed by self time")
    args = parser.parse_args()

    if args.python:
        os.environ[layer_build.INTERPRETER_ENV] = args.python
    python = layer_build.bytecode_interpreter()
    if python is None:
        parser.error(f"no CPython {layer_build.PYTHON_VERSION} found; pass --python")

    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"interpreter: {python}, load average at start: {os.getloadavg()}")
    print()
    print("| function | module | layers | median ms | min ms | max ms | runs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    profiles: dict[str, dict[str, list[int]]] = {}
    for label, interpreter in (("with bytecode", python), ("sources only", None)):
        base_path, pixels_path = build_paths(interpreter)
        for function, (module, service, pixels) in FUNCTIONS.items():
            path = [*base_path, pixels_path] if pixels else base_path
            layers = f"core{', pixels' if pixels else ''}, shared, {label}"
            totals = []
            packages: dict[str, list[int]] = collections.defaultdict(list)
            for _ in range(args.runs):
                total, per_package = measure(python, module, service, path)
                totals.append(total / 1000)
                for name, micros in per_package.items():
                    packages[name].append(micros)
            median = statistics.median(totals)
            print(
                f"| {function} | {module} | {layers} | {median:.0f} | {min(totals):.0f} "
                f"| {max(totals):.0f} | {args.runs} |"
            )
            if interpreter is not None:
                profiles[function] = packages
    for function, packages in profiles.items():
        print()
        print(f"{function} function, with bytecode: median self time per top-level package")
        print()
        print("| package | ms |")
        print("| --- | --- |")
        ranked = sorted(packages.items(), key=lambda item: -statistics.median(item[1]))
        for name, samples in ranked[: args.top]:
            print(f"| {name} | {statistics.median(samples) / 1000:.0f} |")
    print()
    print(f"target: {TARGET_MS} ms per function")
    return 0


if __name__ == "__main__":
    sys.exit(main())
