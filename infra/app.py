"""CDK app entry point, which cdk.json runs. Select a deployment with `-c deployment=NAME`."""

from __future__ import annotations

import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent
# The shared layer is also installed editable in .venv. The path lets the app run without it.
sys.path[:0] = [str(INFRA.parent / "layers" / "shared" / "python"), str(INFRA)]

from cirrus_infra import build_app  # noqa: E402

if __name__ == "__main__":
    app, _ = build_app()
    app.synth()
