"""Gateways for the tests, each open to every caller for the suite's site."""

from __future__ import annotations

from cirrus.config import Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.server import Gateway
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import SITE

OPEN_CONFIG = AEConfig(open=True, default_site=SITE)


def start_gateway(
    settings: Settings, store: ObjectStore | None = None, config: AEConfig = OPEN_CONFIG
) -> Gateway:
    """Start a gateway on a free loopback port, writing to ``store`` when one is given."""
    services = Services(settings)
    if store is not None:
        services.store = store
    return Gateway.start(services, config, LOOPBACK, 0)
