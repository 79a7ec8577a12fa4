"""The entry point of the ``cirrus`` command, which imports the command line lazily.

Importing ``cirrus.cli`` and its dependencies can take a second (0.95 s, measured cold on a
shared two-core machine), so a Ctrl-C right after the start lands in an import. Catching it
here makes it exit with status 130 and one line, as a Ctrl-C during a command does, instead
of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

INTERRUPTED_STATUS = 130


def _load_app() -> Callable[[], object]:
    from cirrus.cli import app

    return app


def main(load_app: Callable[[], Callable[[], object]] = _load_app) -> None:
    """Run the ``cirrus`` command; exit with status 130 on Ctrl-C."""
    try:
        app = load_app()
        app()
    except KeyboardInterrupt:
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
        name = f"cirrus {command}" if command else "cirrus"
        sys.stderr.write(f"{name}: interrupted\n")
        raise SystemExit(INTERRUPTED_STATUS) from None
