"""What the DIMSE services of the gateway share: the adapters, the AE configuration, the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType

from cirrus.gateway.aeconfig import AEConfig, Caller
from cirrus.gateway.audit import GatewayAudit
from cirrus.gateway.tls import TLSConfig
from cirrus.services import Services


class UnknownCallerError(Exception):
    """An association reached a service although the configuration does not know its caller."""


@dataclass(frozen=True)
class GatewayContext:
    """The deployment's adapters and the AE configuration, shared by every association.

    ``tls`` is the gateway's TLS configuration, or None without a TLS listener. Its
    ``client_context`` serves associations that the gateway opens to a destination marked
    ``tls``. ``audit`` writes the audit records of every service.
    """

    services: Services
    config: AEConfig
    tls: TLSConfig | None = None
    audit: GatewayAudit = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "audit", GatewayAudit(self.services.audit))

    def caller(self, assoc: Association) -> Caller:
        """Return the configured caller of ``assoc``.

        Association negotiation has rejected every caller that the configuration does not
        know, so this raises only if that check was bypassed.
        """
        caller = self.config.caller(assoc.requestor.ae_title)
        if caller is None:
            raise UnknownCallerError(f"calling AE title {assoc.requestor.ae_title!r} is unknown")
        return caller


class DimseService(Protocol):
    """One DIMSE service of the gateway: the contexts it supports and its event handlers."""

    def add_contexts(self, ae: AE) -> None:
        """Add the presentation contexts this service accepts to ``ae``."""

    def event_handlers(self) -> list[EventHandlerType]:
        """Return the pynetdicom event handlers that implement the service."""


def peer(assoc: Association) -> dict[str, Any]:
    """Return the log keys that name the peer of ``assoc``: its AE title and address."""
    requestor = assoc.requestor
    return {"calling_ae": requestor.ae_title, "peer": f"{requestor.address}:{requestor.port}"}
