"""A DICOMweb server as the source of an import: QIDO-RS lists studies, WADO-RS retrieves them.

Each study is retrieved as ``multipart/related; type="application/dicom"`` with
``transfer-syntax=*``, so that the server sends each instance in the syntax it stores, and the
parts are imported as the server sent them, without decoding and encoding them again.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator
from io import BytesIO
from typing import Any, Final
from urllib.parse import urlsplit

import requests
from pydicom import dcmread

from cirrus.bulk_import.outcome import Result
from cirrus.bulk_import.sources import SourceUnavailableError, Unit, UnitImport
from cirrus.bulk_import.study_filter import StudyFilter

logger = logging.getLogger(__name__)

_ACCEPT: Final = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_STUDY_UID: Final = "0020000D"
_STUDY_INSTANCES: Final = "00201208"
_QIDO_PAGE: Final = 1000


class DicomwebSource:
    """The studies of a DICOMweb service that match ``study_filter``."""

    def __init__(self, url: str, study_filter: StudyFilter, timeout: float = 300.0) -> None:
        from dicomweb_client.api import DICOMwebClient

        self._url = url.rstrip("/")
        self.description = f"DICOMweb {self._url}"
        self._filter = study_filter
        self._client = DICOMwebClient(url=self._url)
        self._timeout = timeout

    def units(self) -> Iterator[Unit]:
        studies: dict[str, int | None] = {}
        for search in self._filter.qido_searches():
            for study in self._search(search):
                uid = _first(study, _STUDY_UID)
                if isinstance(uid, str) and uid:
                    count = _first(study, _STUDY_INSTANCES)
                    studies[uid] = int(count) if isinstance(count, int | str) else None
        for uid in sorted(studies):
            yield Unit(uid, studies[uid], tracks_instances=True)

    def _search(self, search: dict[str, str]) -> list[dict[str, Any]]:
        try:
            return list(
                self._client.search_for_studies(
                    search_filters=search,
                    fields=["NumberOfStudyRelatedInstances"],
                    get_remaining=True,
                    limit=_QIDO_PAGE,
                )
            )
        except requests.RequestException as exc:
            # The exception's text may quote the query, which can contain a patient ID.
            raise SourceUnavailableError(
                f"QIDO-RS search at {self._url} failed: {_describe(exc, self._url)}"
            ) from exc

    def order(self, key: str) -> Hashable:
        return key

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        url = f"{self._url}/studies/{unit.key}"
        try:
            # NOTE: dicomweb-client 0.61.2 returns retrieved instances only as decoded pydicom
            # data sets, so its request and multipart helpers are used to get the bytes as sent.
            response = self._client._http_get(url, headers={"Accept": _ACCEPT}, stream=True)
            parts = self._client._decode_multipart_message(response, stream=True)
            for part in parts:
                target.data(bytes(part), _sop_instance_uid(part) or unit.key, Result.REJECTED)
        except requests.RequestException as exc:
            target.failed(unit.key, f"WADO-RS retrieve of the study failed: {_describe(exc, url)}")
        except ValueError as exc:
            target.failed(unit.key, f"WADO-RS response could not be read: {exc}")

    def close(self) -> None:
        self._client._session.close()


def _sop_instance_uid(part: bytes) -> str:
    """Return the SOP Instance UID of a Part 10 object, or "" when it cannot be read."""
    try:
        ds = dcmread(BytesIO(part), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return str(ds.get("SOPInstanceUID", ""))
    except Exception:  # noqa: BLE001 - the import then rejects the part with the reason
        return ""


def _first(attributes: dict[str, Any], tag: str) -> object:
    values = attributes.get(tag, {}).get("Value") or [None]
    return values[0]


def _describe(exc: requests.RequestException, url: str) -> str:
    """Describe a failed request without its text, which may quote the query."""
    response = exc.response
    if response is not None:
        return f"HTTP {response.status_code} {response.reason}"
    host = urlsplit(url).netloc
    if isinstance(exc, requests.Timeout):
        return f"{host} did not respond in time ({type(exc).__name__})"
    cause = _os_error(exc)
    if cause is not None:
        return f"cannot connect to {host}: {cause.strerror or type(cause).__name__}"
    return f"{type(exc).__name__} with {host}"


def _os_error(exc: BaseException) -> OSError | None:
    """Return the operating system's error under ``exc`` (refused, unknown host), if any."""
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.strerror:
            return error
        # urllib3 keeps the cause of a failed retry in ``reason``, requests in ``args``.
        pending.extend([error.__cause__, error.__context__, getattr(error, "reason", None)])
        pending.extend(error.args)
    return None
