"""Sends Cirrus events to the deployment's EventBridge bus.

Sending is at least once while the process lives: a failed PutEvents request, or an entry that
EventBridge reports as failed, is sent again three more times, after the delays of
``RETRY_DELAYS_SECONDS``.
An event still not sent is logged with its type and UIDs (never patient data) and counted in
``failed``, and the caller carries on: a store or delete that succeeded never fails because
of its event. A consumer that must not miss a change reads the change feed as well.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from cirrus.events.model import CirrusEvent

logger = logging.getLogger(__name__)

# PutEvents takes at most 10 entries per request.
MAX_ENTRIES: Final = 10
RETRY_DELAYS_SECONDS: Final = (0.1, 0.4, 1.6)


class Publisher(Protocol):
    """The destination of the archive's events."""

    def publish(self, events: Sequence[CirrusEvent]) -> int: ...


class NoPublisher:
    """Sends nothing: a deployment without an event bus."""

    def publish(self, events: Sequence[CirrusEvent]) -> int:
        return 0


class EventPublisher:
    """Sends events to one bus with PutEvents and retries failures. ``publish`` never raises."""

    def __init__(
        self,
        client: Any,
        bus: str,
        delays: Sequence[float] = RETRY_DELAYS_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._bus = bus
        self._delays = tuple(delays)
        self._sleep = sleep
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def publish(self, events: Sequence[CirrusEvent]) -> int:
        """Send ``events``; return how many were accepted by EventBridge."""
        accepted = 0
        for start in range(0, len(events), MAX_ENTRIES):
            batch = list(events[start : start + MAX_ENTRIES])
            try:
                accepted += self._send_batch(batch)
            except Exception:
                # A bug here must not fail the store or delete that the events report.
                logger.exception("events not sent", extra={"events": len(batch)})
                with self._lock:
                    self.failed += len(batch)
        return accepted

    def _send_batch(self, events: list[CirrusEvent]) -> int:
        pending = events
        error = ""
        for attempt in range(len(self._delays) + 1):
            if attempt:
                self._sleep(self._delays[attempt - 1])
            try:
                response = self._client.put_events(
                    Entries=[event.entry(self._bus) for event in pending]
                )
            except (ClientError, BotoCoreError) as exc:
                error = _error_code(exc)
                continue
            results = response.get("Entries", [])
            failed = [
                (event, result)
                for event, result in zip(pending, results, strict=False)
                if result.get("ErrorCode")
            ]
            # A response with fewer results than entries leaves the rest unconfirmed.
            failed += [(event, {}) for event in pending[len(results) :]]
            if not failed:
                pending = []
                break
            error = str(failed[0][1].get("ErrorCode") or "missing result")
            pending = [event for event, _ in failed]
        with self._lock:
            self.sent += len(events) - len(pending)
            self.failed += len(pending)
        _log_unsent(pending, error, len(self._delays) + 1)
        return len(events) - len(pending)


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def _log_unsent(events: Iterable[CirrusEvent], error: str, attempts: int) -> None:
    for event in events:
        detail = event.detail
        logger.error(
            "event not sent after %d attempts",
            attempts,
            extra={
                "detail_type": event.detail_type,
                "site": detail.get("site"),
                "study": detail.get("StudyInstanceUID"),
                "sop": detail.get("SOPInstanceUID"),
                "error": error,
            },
        )
