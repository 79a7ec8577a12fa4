"""Precomputes metadata bundles after ingest, once a series has been quiet for a moment.

After each instance is indexed, ingest sends one message to its own queue with
``DelaySeconds``. The message names the series and carries the tags that the series and
study records had right after that instance was indexed. When the message is delivered, the
ingest handler compares those tags with the current ones:

- a tag that changed means a later instance arrived, and that instance sent a message of its
  own, so this one is dropped;
- a tag that is still current means nothing arrived for the delay, so the bundle is built
  and stored for every base URL that clients have read this site under
  (``MetadataBundles.base_urls``).

A 1,000-instance series sent at a steady pace is thus built about once, after its last
instance, and not 1,000 times. A message that is lost, or a base URL seen for the first time,
costs only speed, because a read rebuilds any bundle whose tag is not current.
The same queue as the S3 notifications is used, so the local stack and the CDK stack need no
other queue. A failing build is retried and then kept in the dead-letter queue like a failed
notification.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from cirrus.dicomweb.bundles import MetadataBundles
from cirrus.errors import CirrusError, NotFoundError
from cirrus.storage.keys import InstanceKey

logger = logging.getLogger(__name__)

MESSAGE_TYPE: Final = "cirrus.metadata-refresh"
# Long enough to span the gap between two instances of a series being sent, short enough that
# a viewer opening a study just after it arrived finds its bundles built.
REFRESH_DELAY_SECONDS: Final = 5


@dataclass(frozen=True)
class RefreshRequest:
    """A request to precompute the bundles of one series and its study."""

    site: str
    study: str
    series: str
    series_tag: str | None
    study_tag: str | None

    def to_body(self) -> str:
        return json.dumps({"type": MESSAGE_TYPE, **asdict(self)})

    @classmethod
    def from_body(cls, body: str) -> RefreshRequest | None:
        """Parse a queue message body; None when it is not a refresh request."""
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        if not isinstance(parsed, dict) or parsed.get("type") != MESSAGE_TYPE:
            return None
        site, study, series = parsed.get("site"), parsed.get("study"), parsed.get("series")
        if not (isinstance(site, str) and isinstance(study, str) and isinstance(series, str)):
            raise ValueError("metadata refresh message lacks site, study or series")
        return cls(
            site, study, series, _text(parsed.get("series_tag")), _text(parsed.get("study_tag"))
        )


class BundleRefresher:
    """Schedules bundle builds after ingest and runs them when their message arrives."""

    def __init__(
        self,
        bundles: MetadataBundles,
        sqs: Any,
        queue_url: str,
        delay_seconds: int = REFRESH_DELAY_SECONDS,
    ) -> None:
        self._bundles = bundles
        self._sqs = sqs
        self._queue_url = queue_url
        self._delay_seconds = delay_seconds

    def schedule(self, key: InstanceKey) -> None:
        """Send the refresh request for the series of ``key``; log and go on if that fails.

        The instance is indexed already, and reads rebuild stale bundles, so a request that
        cannot be sent must not fail the ingest.
        """
        try:
            request = RefreshRequest(
                key.site,
                key.study,
                key.series,
                self._bundles.record_tag(key.site, key.study, key.series),
                self._bundles.record_tag(key.site, key.study, None),
            )
            self._sqs.send_message(
                QueueUrl=self._queue_url,
                MessageBody=request.to_body(),
                DelaySeconds=self._delay_seconds,
            )
        except (CirrusError, ClientError, BotoCoreError) as exc:
            logger.warning(
                "metadata refresh not scheduled",
                extra={"object_key": key.object_key, "error": type(exc).__name__},
            )

    def refresh(self, request: RefreshRequest) -> int:
        """Build the bundles of ``request`` that are still current; return how many were checked.

        Raises ``StoreUnavailableError`` when S3 or DynamoDB fail, so the message is retried.
        """
        base_urls = self._bundles.base_urls(request.site)
        checked = 0
        for series, tag in ((request.series, request.series_tag), (None, request.study_tag)):
            if tag is None:
                continue
            try:
                current = self._bundles.record_tag(request.site, request.study, series)
            except NotFoundError:
                continue
            if current != tag:
                continue
            for base_url in base_urls:
                try:
                    self._bundles.fetch(request.site, request.study, series, base_url, current)
                except NotFoundError:
                    # Every instance was deleted after the tag was read.
                    break
                checked += 1
        return checked


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
