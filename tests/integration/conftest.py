"""Fixtures of the integration tests besides the shared moto server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cirrus.local.moto_process import MotoProcess
from tests.fault_proxy import FaultProxy


@pytest.fixture
def proxy(moto_server: MotoProcess) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the moto server, with no fault set."""
    proxy = FaultProxy(moto_server.endpoint_url)
    yield proxy
    proxy.close()
