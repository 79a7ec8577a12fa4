"""The timing loop of the side-by-side read benchmark (bench/versus_read.py's ``_alternate``)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.versus_read import _alternate


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    """Start each test with the garbage collector on, and restore its state afterwards."""
    enabled = gc.isenabled()
    gc.enable()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


def cyclic_garbage(count: int) -> None:
    """Create ``count`` lists that refer to themselves, which only the collector frees."""
    for _ in range(count):
        item: list[Any] = []
        item.append(item)


def recording_call(side: str, calls: list[tuple[str, bool]]) -> Callable[[], str]:
    def call() -> str:
        calls.append((side, gc.isenabled()))
        cyclic_garbage(20_000)
        return side

    return call


@pytest.mark.usefixtures("collector_enabled")
def test_timed_calls_run_without_collector() -> None:
    calls: list[tuple[str, bool]] = []

    cirrus, orthanc, cirrus_values, orthanc_values = _alternate(
        recording_call("cirrus", calls), recording_call("orthanc", calls), runs=3
    )

    assert len(cirrus) == 3
    assert len(orthanc) == 3
    assert cirrus_values == ["cirrus"] * 3
    assert orthanc_values == ["orthanc"] * 3
    warmup, timed = calls[:2], calls[2:]
    assert warmup == [("cirrus", True), ("orthanc", True)]
    assert len(timed) == 6
    assert all(not enabled for _, enabled in timed)
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_no_collection_inside_timed_call() -> None:
    inside = [False]
    started_inside: list[int] = []

    def note_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and inside[0]:
            started_inside.append(info["generation"])

    def call() -> int:
        inside[0] = True
        try:
            # 20,000 container objects are many times the first generation's threshold
            # (700 by default), so an enabled collector would run during the call.
            cyclic_garbage(20_000)
        finally:
            inside[0] = False
        return 1

    gc.callbacks.append(note_collection)
    try:
        _alternate(call, call, runs=2, warmup=0)
    finally:
        gc.callbacks.remove(note_collection)

    assert started_inside == []
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_failed_call_turns_collector_back_on() -> None:
    def failing() -> None:
        raise RuntimeError("request failed")

    with pytest.raises(RuntimeError, match="request failed"):
        _alternate(lambda: None, failing, runs=1, warmup=0)

    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_collector_left_off_when_off_before() -> None:
    gc.disable()

    _alternate(lambda: 1, lambda: 2, runs=2, warmup=0)

    assert not gc.isenabled()
