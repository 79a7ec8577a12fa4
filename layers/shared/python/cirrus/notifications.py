"""S3 object-created notifications as they arrive in the ingest queue's messages."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

from cirrus.ingest import ObjectEvent


def object_events(message_body: str) -> list[ObjectEvent]:
    """Return the object-created events of one SQS message body.

    S3 sends an ``s3:TestEvent`` message when a notification is configured, and it contains no
    records. Keys arrive URL-encoded with '+' for spaces, as S3 sends them.
    """
    body = json.loads(message_body)
    events = []
    for record in body.get("Records", ()):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        obj = record["s3"]["object"]
        events.append(
            ObjectEvent(
                key=unquote_plus(obj["key"]),
                size=obj.get("size"),
                etag=obj.get("eTag"),
                sequencer=obj.get("sequencer"),
            )
        )
    return events
