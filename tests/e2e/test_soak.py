"""A small soak run in CI: 400 instances over 8 associations and STOW-RS, under reads.

It runs the code of ``bench/soak.py`` (``tests/e2e/soak.py``) at a size that takes well under
a minute. It asserts exact counts and no errors, and nothing about speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import start_stack
from tests.e2e.soak import STOW, SoakConfig, check_soak, run_soak

CONFIG = SoakConfig(instances=400, associations=8, series_size=20, rows=64, indexed_timeout=120)


@pytest.mark.timeout(300)
def test_soak_small(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "data")
    try:
        result = run_soak(stack, CONFIG)
        problems = check_soak(stack, result)
    finally:
        code = stack.stop()

    assert not problems
    assert result.acknowledged_count == CONFIG.instances
    assert result.operations.latencies[STOW]
    assert code == 0
