"""Console logging for long-running local processes: one line per event, extras as key=value.

Lambda functions log JSON through powertools instead; both carry the same ``extra`` keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

_STANDARD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    """Append each ``extra`` field of a record to its message as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
        ]
        return " ".join([line, *extras]) if extras else line


def _console_formatter() -> KeyValueFormatter:
    return KeyValueFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")


def configure_console_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_console_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "pynamodb", "pynetdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pydicom reports a non-conformant value both as a Python warning and as a log record;
    # the warning alone is shown.
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def use_console_format(logger: Any) -> Callable[[], None]:
    """Give a powertools logger of a Lambda handler the console format of the local stack.

    Returns a function that puts the powertools formatters back, which the handler's
    ``inject_lambda_context`` needs if the handler is later invoked as a Lambda function in
    the same process.
    """
    previous = [(handler, handler.formatter) for handler in logger.handlers]
    for handler, _ in previous:
        handler.setFormatter(_console_formatter())

    def restore() -> None:
        for handler, formatter in previous:
            handler.setFormatter(formatter)

    return restore
