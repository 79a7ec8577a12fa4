"""The local stack as the target of an import, with the notifications that index what it writes."""

from __future__ import annotations

from pathlib import Path

from cirrus.local.datadir import FolderObjectStore
from cirrus.local.endpoints import read_endpoints
from cirrus.operations.target import Target, local_target


def local_import_target(data_dir: Path) -> Target:
    """Return the local stack running on ``data_dir``, whose store notifies its ingest queue.

    The objects are written into the stack's data folder, as its gateway workers write them,
    and each write sends the ingest queue the notification that S3 would send. Raises
    ``NoStackError`` when no stack runs there.
    """
    from cirrus.local.stack import local_notifier

    target = local_target(data_dir)
    endpoints = read_endpoints(data_dir)
    services = target.services
    services.store = FolderObjectStore(
        endpoints.objects_dir, endpoints.settings.bucket, local_notifier(services)
    )
    return target
