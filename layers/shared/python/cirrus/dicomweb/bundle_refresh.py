"""Precomputes metadata bundles after ingest, once a series has been quiet for a moment.

After each batch, ingest sends one message to its own queue with ``DelaySeconds`` for each
series that the batch changed. The message names the series and carries the
``metadata_version`` that the batch's last index transaction of the series set on the series
and study records. When the message is delivered, the ingest handler compares it with the
records' current version:

- another version means a later instance arrived, and its batch sent a message of its own,
  so this one is dropped after one GetItem;
- the same version means nothing arrived for the delay, so the bundle is built and stored
  for every base URL that clients have read this site under (``MetadataBundles.base_urls``).

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
from cirrus.errors import NotFoundError
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
    version: str

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
        values = [parsed.get(name) for name in ("site", "study", "series", "version")]
        if not all(isinstance(value, str) for value in values):
            raise ValueError("metadata refresh message lacks site, study, series or version")
        site, study, series, version = (str(value) for value in values)
        return cls(site, study, series, version)


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

    def schedule(self, key: InstanceKey, version: str) -> None:
        """Send the refresh request for the series of ``key``; log and go on if that fails.

        ``version`` is the ``metadata_version`` that indexing the instance set. The instance is
        indexed already, and reads rebuild stale bundles, so a request that cannot be sent
        must not fail the ingest.
        """
        request = RefreshRequest(key.site, key.study, key.series, version)
        try:
            self._sqs.send_message(
                QueueUrl=self._queue_url,
                MessageBody=request.to_body(),
                DelaySeconds=self._delay_seconds,
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "metadata refresh not scheduled",
                extra={"object_key": key.object_key, "error": type(exc).__name__},
            )

    def refresh(self, request: RefreshRequest) -> int:
        """Build the bundles of ``request`` that are still current; return how many were checked.

        Raises ``StoreUnavailableError`` when S3 or DynamoDB fail, so the message is retried.
        """
        site, study = request.site, request.study
        checked = 0
        base_urls: list[str] | None = None
        # A later store in the series also changed the study, so its request covers both.
        for series in (request.series, None):
            try:
                if self._bundles.version(site, study, series) != request.version:
                    return checked
                tag = self._bundles.record_tag(site, study, series)
                if base_urls is None:
                    base_urls = self._bundles.base_urls(site)
                for base_url in base_urls:
                    self._bundles.fetch(site, study, series, base_url, tag)
                    checked += 1
            except NotFoundError:
                # The series or study was deleted after the request was sent.
                return checked
        return checked
