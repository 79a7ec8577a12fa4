"""The deployment an operator command works on: a running local stack, or the environment's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cirrus.config import Settings
from cirrus.events.feed import ChangeFeed
from cirrus.events.tables import bind_change_model
from cirrus.local.change_journal import JOURNAL_FILE as CHANGE_JOURNAL_FILE
from cirrus.local.change_journal import FileChangeJournal
from cirrus.local.datadir import FolderObjectStore
from cirrus.local.endpoints import read_endpoints
from cirrus.services import Services
from cirrus.storage.keys import site_prefix


@dataclass
class Target:
    """The services of one deployment, and what the command output calls it."""

    services: Services
    name: str

    def object_prefix(self, site: str | None) -> str:
        """Return the key prefix of the archived instances of ``site``, or of every site."""
        return site_prefix(site) if site else "sites/"


def local_target(data_dir: Path) -> Target:
    """Return the local stack running on ``data_dir``.

    Its archive objects are the files of the data folder, as the stack's own store reads them.
    Raises ``cirrus.local.endpoints.NoStackError`` when no stack runs there.
    """
    from cirrus.local.moto_process import use_local_credentials

    endpoints = read_endpoints(data_dir)
    use_local_credentials()
    services = Services(endpoints.settings)
    # No notifier: a command writes no instance, and the stack's own store sends the
    # notifications of the objects it writes.
    services.store = FolderObjectStore(endpoints.objects_dir, endpoints.settings.bucket)
    # The changes that a command writes (reindex, its pruning) go to the stack's journal too.
    model = bind_change_model(endpoints.settings)
    if model is not None:
        journal = FileChangeJournal(data_dir / CHANGE_JOURNAL_FILE)
        services.change_feed = ChangeFeed(model, journal=journal)
    return Target(services, f"local stack on {data_dir}")


def env_target() -> Target:
    """Return the deployment that the CIRRUS_* environment variables name.

    Raises ``ValueError`` when a variable is missing or invalid.
    """
    settings = Settings.from_env()
    return Target(Services(settings), f"deployment {settings.deployment}")
