"""The resource limits of one gateway process, and their reading from the environment.

Five bounds keep a busy gateway serving instead of running out of memory or disk:

- ``max_associations``: associations served at once. pynetdicom rejects one more with
  A-ASSOCIATE-RJ, result rejected-transient, source service-provider (presentation),
  reason "local limit exceeded" (PS3.8 9.3.4). A connection counts once its A-ASSOCIATE-RQ
  has arrived.
- ``max_pending_connections``: connections that have not sent their A-ASSOCIATE-RQ yet.
  Each takes a file descriptor, and two threads once its first bytes arrive, for up to the
  request timeout. One more closes the oldest of them (``cirrus.gateway.connections``).
- ``max_instance_bytes``: size of one received data set. A larger one is received to its
  end without being kept, and its C-STORE gets 0xA700 with an Error Comment.
- ``spool_bytes``: bytes of all data sets being received or stored at once, which the gateway
  writes to files in ``spool_dir`` (``cirrus.gateway.spool``). A data set that would pass
  the bound gets 0xA700 too, and the sender may retry it later.
- ``association_spool_bytes``: bytes of one association's data sets being received or stored
  at once, so that one association cannot take the whole spool from the others. A data set
  that would pass it gets 0xA700 as well. The default is ``max_instance_bytes``. A sender
  that waits for each response, as the window of one operation that pynetdicom 3.0.4
  negotiates requires, can then send any instance that the gateway takes. A sender that sends
  requests ahead of their responses, which pynetdicom still reads, gets at most one
  maximum-size instance into the spool at once. A value below ``max_instance_bytes`` is also
  the largest instance that the gateway takes.

Two time-outs end connections that stop sending, so that each frees its threads, its socket
and its spool files (``Spool.discard`` at the end of the association):

- ``acse_timeout_seconds``: time a new connection has to start its A-ASSOCIATE-RQ, and then
  again to finish it (``cirrus.gateway.connections``; pynetdicom's ACSE timeout).
- ``network_timeout_seconds``: time an association may send nothing, between PDUs or in the
  middle of one (pynetdicom's network timeout: the idle timer of the DUL thread, and the
  time-out of each read of the socket, 1 s longer). The idle timer restarts after each whole
  PDU, so this is also the time to receive one PDU. It restarts as well once the gateway has
  served a request, so a slow upload does not count. The association is then aborted.

Memory does not grow with instance size: an instance is spooled to disk as it arrives and
uploaded from the file one part at a time.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cirrus.archive import MAX_OBJECT_BYTES

DEFAULT_MAX_ASSOCIATIONS: Final = 25
# Four times the associations, so that a burst of modalities connecting at once fits. A
# connection that has sent data takes two threads until its request is complete.
DEFAULT_MAX_PENDING_CONNECTIONS: Final = 100
# A CT or MR series arrives as many small instances, but whole-slide images, breast
# tomosynthesis and long ultrasound clips reach gigabytes in one instance.
DEFAULT_MAX_INSTANCE_BYTES: Final = 2 * 1024**3
# Fargate gives a task 20 GiB of ephemeral storage unless its definition asks for more, and
# the container image takes part of it.
DEFAULT_SPOOL_BYTES: Final = 8 * 1024**3
# pynetdicom's default is 30 s; a modality sends its request within milliseconds of connecting.
DEFAULT_ACSE_TIMEOUT_SECONDS: Final = 10.0
# pynetdicom's default. It bounds silence and the time to receive one PDU, not the time of a
# transfer, so a slow link that keeps sending PDUs is not cut off.
DEFAULT_NETWORK_TIMEOUT_SECONDS: Final = 60.0

ENV_MAX_ASSOCIATIONS: Final = "CIRRUS_MAX_ASSOCIATIONS"
ENV_MAX_INSTANCE_BYTES: Final = "CIRRUS_MAX_INSTANCE_BYTES"
ENV_SPOOL_BYTES: Final = "CIRRUS_SPOOL_BYTES"
ENV_SPOOL_DIR: Final = "CIRRUS_SPOOL_DIR"
ENV_ASSOCIATION_SPOOL_BYTES: Final = "CIRRUS_ASSOCIATION_SPOOL_BYTES"
ENV_MAX_PENDING_CONNECTIONS: Final = "CIRRUS_MAX_PENDING_CONNECTIONS"
ENV_ACSE_TIMEOUT: Final = "CIRRUS_ACSE_TIMEOUT_SECONDS"
ENV_NETWORK_TIMEOUT: Final = "CIRRUS_NETWORK_TIMEOUT_SECONDS"


@dataclass(frozen=True)
class GatewayLimits:
    """The bounds of one gateway.

    ``spool_dir`` None means the system's temporary folder, and ``association_spool_bytes``
    None means ``max_instance_bytes``.
    """

    max_associations: int = DEFAULT_MAX_ASSOCIATIONS
    max_instance_bytes: int = DEFAULT_MAX_INSTANCE_BYTES
    spool_bytes: int = DEFAULT_SPOOL_BYTES
    spool_dir: Path | None = None
    association_spool_bytes: int | None = None
    max_pending_connections: int = DEFAULT_MAX_PENDING_CONNECTIONS
    acse_timeout_seconds: float = DEFAULT_ACSE_TIMEOUT_SECONDS
    network_timeout_seconds: float = DEFAULT_NETWORK_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        for name in ("acse_timeout_seconds", "network_timeout_seconds"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} is {value}; it must be more than 0")
        if self.max_associations < 1:
            raise ValueError(f"max_associations is {self.max_associations}; it must be 1 or more")
        if self.max_pending_connections < 1:
            raise ValueError(
                f"max_pending_connections is {self.max_pending_connections}; it must be 1 or more"
            )
        if not 1 <= self.max_instance_bytes <= MAX_OBJECT_BYTES:
            raise ValueError(
                f"max_instance_bytes is {self.max_instance_bytes}; it must be from 1 to "
                f"{MAX_OBJECT_BYTES}, the largest object the archive stores"
            )
        if self.spool_bytes < self.max_instance_bytes:
            raise ValueError(
                f"spool_bytes {self.spool_bytes} is smaller than max_instance_bytes "
                f"{self.max_instance_bytes}; the spool must hold at least one instance"
            )
        association = self.association_spool_bytes
        if association is not None and not 1 <= association <= self.spool_bytes:
            raise ValueError(
                f"association_spool_bytes is {association}; it must be from 1 to spool_bytes "
                f"{self.spool_bytes}"
            )

    @property
    def spool_root(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else Path(tempfile.gettempdir())

    @property
    def association_spool_limit(self) -> int:
        """The bound in use on the spooled bytes of one association."""
        if self.association_spool_bytes is not None:
            return self.association_spool_bytes
        return self.max_instance_bytes

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewayLimits:
        """Read the limits from ``CIRRUS_MAX_ASSOCIATIONS``, ``CIRRUS_MAX_INSTANCE_BYTES``,
        ``CIRRUS_SPOOL_BYTES``, ``CIRRUS_SPOOL_DIR``, ``CIRRUS_ASSOCIATION_SPOOL_BYTES`` and
        ``CIRRUS_MAX_PENDING_CONNECTIONS``, and the time-outs from
        ``CIRRUS_ACSE_TIMEOUT_SECONDS`` and ``CIRRUS_NETWORK_TIMEOUT_SECONDS``; raise
        ``ValueError`` for a bad value.
        """
        spool_dir = environ.get(ENV_SPOOL_DIR)
        limits = cls(
            max_associations=_read_int(environ, ENV_MAX_ASSOCIATIONS, DEFAULT_MAX_ASSOCIATIONS),
            max_instance_bytes=_read_int(
                environ, ENV_MAX_INSTANCE_BYTES, DEFAULT_MAX_INSTANCE_BYTES
            ),
            spool_bytes=_read_int(environ, ENV_SPOOL_BYTES, DEFAULT_SPOOL_BYTES),
            spool_dir=Path(spool_dir) if spool_dir else None,
            association_spool_bytes=_read_optional_int(environ, ENV_ASSOCIATION_SPOOL_BYTES),
            max_pending_connections=_read_int(
                environ, ENV_MAX_PENDING_CONNECTIONS, DEFAULT_MAX_PENDING_CONNECTIONS
            ),
            acse_timeout_seconds=_read_seconds(
                environ, ENV_ACSE_TIMEOUT, DEFAULT_ACSE_TIMEOUT_SECONDS
            ),
            network_timeout_seconds=_read_seconds(
                environ, ENV_NETWORK_TIMEOUT, DEFAULT_NETWORK_TIMEOUT_SECONDS
            ),
        )
        if not limits.spool_root.is_dir():
            raise ValueError(f"{ENV_SPOOL_DIR} {str(limits.spool_root)!r} is not a folder")
        return limits


def _read_int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _read_optional_int(environ, name)
    return default if value is None else value


def _read_optional_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{name} {value!r} is invalid; give a whole number")
    return int(value)


def _read_seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    value = environ.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is invalid; give a number of seconds") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{name} {value!r} is invalid; give a number of seconds")
    return seconds
