"""The output of ``cirrus events`` and ``cirrus changes``: text lines, or JSON lines."""

from __future__ import annotations

import json
from typing import Any

from cirrus.events.feed import Change

_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def event_line(entry: dict[str, Any], json_lines: bool) -> str:
    """Return one journal entry (an EventBridge event) as a line of text or JSON."""
    if json_lines:
        return json.dumps(entry, separators=(",", ":"), sort_keys=True)
    detail = entry.get("detail") or {}
    detail_type = str(entry.get("detail-type", ""))
    uids = " ".join(str(detail[name]) for name in _UIDS if detail.get(name))
    extra = ""
    if detail_type == "StudyStable":
        series, instances = _text(detail.get("series")), _text(detail.get("instances"))
        extra = f" series={series} instances={instances}"
    elif detail_type == "InstanceRejected":
        transport, status = _text(detail.get("transport")), _text(detail.get("status"))
        extra = f" {transport} {status}: {_text(detail.get('reason'))}"
    elif detail_type == "InstanceStored":
        extra = f" {_text(detail.get('Modality'))} {_text(detail.get('size'))} bytes"
    when = detail.get("time", entry.get("time", ""))
    return f"{when} {detail_type} site={_text(detail.get('site'))} {uids}{extra}"


def _text(value: Any) -> str:
    """Return ``value`` for a text line, with ``-`` for a missing or empty value."""
    if value is None or value == "":
        return "-"
    return str(value)


def change_line(site: str, change: Change, json_lines: bool) -> str:
    """Return one change of the feed as a line of text or JSON."""
    if json_lines:
        return json.dumps({"site": site, **change.to_json()}, separators=(",", ":"))
    return (
        f"{change.sequence} {change.time} {change.action} site={site} "
        f"{change.study} {change.series} {change.sop}"
    )
