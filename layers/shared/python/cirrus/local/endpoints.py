"""The endpoints file of a running local stack, which the operator commands read.

``cirrus dev`` starts moto on a free port, so its endpoint changes with every start. While the
stack runs, ``endpoints.json`` in its data folder names that endpoint and the resource names,
so that ``cirrus verify``, ``reindex`` and ``redrive`` reach the same index and queues. The file
contains no secret: moto accepts any credentials. The stack removes it when it stops. A stack
that was killed leaves it behind, so a reader also checks that the data folder is locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cirrus.config import Settings
from cirrus.local.datadir import LOCK_FILE

ENDPOINTS_FILE: Final = "endpoints.json"


class NoStackError(Exception):
    """No local stack is running on the data folder."""


@dataclass(frozen=True)
class LocalEndpoints:
    """The settings and endpoints that an operator command uses to reach a running local stack."""

    settings: Settings
    objects_dir: Path
    pid: int


def write_endpoints(data_dir: Path, settings: Settings, objects_dir: Path) -> Path:
    """Write the endpoints file of a stack that has just started; return its path."""
    path = data_dir / ENDPOINTS_FILE
    document = {"pid": os.getpid(), "objects_dir": str(objects_dir), "env": settings.to_env()}
    fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=".endpoints-")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(document, file, indent=2)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def remove_endpoints(data_dir: Path) -> None:
    (data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)


def read_endpoints(data_dir: Path) -> LocalEndpoints:
    """Return the endpoints of the stack running on ``data_dir``.

    Raises ``NoStackError`` when no ``cirrus dev`` holds the folder's lock or the file is
    missing or unreadable.
    """
    if not data_dir.is_dir():
        raise NoStackError(f"data folder {data_dir} does not exist; give the stack's --data-dir")
    if not _is_locked(data_dir):
        raise NoStackError(
            f"no local stack is running on {data_dir}; start it with "
            f"`cirrus dev --data-dir {data_dir}`, or give --from-env for a deployment"
        )
    path = data_dir / ENDPOINTS_FILE
    try:
        document = json.loads(path.read_text())
        settings = Settings.from_env(document["env"])
        return LocalEndpoints(settings, Path(document["objects_dir"]), int(document["pid"]))
    except FileNotFoundError as exc:
        raise NoStackError(
            f"the local stack on {data_dir} has not written {ENDPOINTS_FILE} yet; wait until "
            "it reports that it is running"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NoStackError(f"{path} is unreadable: {exc}") from exc


def _is_locked(data_dir: Path) -> bool:
    """Tell whether a process holds the data folder's lock (``DataFolderLock``).

    The probe takes a shared lock and leaves the file's content, the holder's PID, as it is.
    """
    try:
        file = (data_dir / LOCK_FILE).open("r")
    except FileNotFoundError:
        return False
    with file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    return False
