"""STOW-RS store transactions (PS3.18 10.5): POST /studies and POST /studies/{study}.

Each part of a multipart/related; type="application/dicom" body goes through
``archive_instance``, the write path the DICOM gateway uses, and is reported in the response
only after S3 has acknowledged it. Parts are independent, so one bad part fails alone, even
when it fails in a way no handler expected (0x0110, Processing failure).

The response is the Store Instances Response Module (PS3.18 Annex I) as application/dicom+json,
or as application/dicom+xml (PS3.19 Native DICOM Model) when the Accept header prefers it.
The response type is chosen before anything is stored, so a 406 stores nothing.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from http import HTTPStatus
from typing import Any, Final

from cirrus.archive import ArchivedInstance, archive_instance, check_instance
from cirrus.dicom.instance import InstanceHeader, parse_instance
from cirrus.dicomweb.errors import exception_fields
from cirrus.dicomweb.media import parse_accept, parse_media_type
from cirrus.dicomweb.multipart import MULTIPART_RELATED, parse_multipart_related
from cirrus.dicomweb.native_xml import DICOM_XML_MEDIA_TYPE, to_native_xml
from cirrus.dicomweb.wado import DICOM_JSON_MEDIA_TYPE, DICOM_MEDIA_TYPE, instance_url, study_url
from cirrus.errors import (
    ConflictError,
    InstanceTooLargeError,
    InvalidInstanceError,
    InvalidRequestError,
    NotAcceptableError,
    StoreUnavailableError,
    UnsupportedMediaTypeError,
)
from cirrus.index.claims import InstanceClaims
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
ACCEPTED_CONTENT_TYPE: Final = f'{MULTIPART_RELATED}; type="{DICOM_MEDIA_TYPE}"'
# Failure messages go to the log line and to Warning header fields, at most this many.
MAX_REPORTED_FAILURES: Final = 10
# Names of storage SOP classes end so ("CT Image Storage", "... Storage - For Processing"),
# unlike "Storage Commitment Push Model SOP Class" or "Hardcopy Color Image Storage SOP Class".
_STORAGE_NAME: Final = re.compile(r"Storage( - [^-]+)?$")
# The media types of the response, the server's preference first.
RESPONSE_MEDIA_TYPES: Final = (DICOM_JSON_MEDIA_TYPE, DICOM_XML_MEDIA_TYPE)

_RETRIEVE_URL: Final = "00081190"
_FAILED_SOP_SEQUENCE: Final = "00081198"
_REFERENCED_SOP_SEQUENCE: Final = "00081199"
_REFERENCED_SOP_CLASS_UID: Final = "00081150"
_REFERENCED_SOP_INSTANCE_UID: Final = "00081155"
_FAILURE_REASON: Final = "00081197"


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) values of the STOW-RS response (PS3.18 Table I.2-2)."""

    # An error that no handler expected; the part may well be valid.
    PROCESSING_FAILURE = 0x0110
    # Duplicate SOP Instance (PS3.7 C.5): the UID is stored under other study or series UIDs.
    DUPLICATE_SOP_INSTANCE = 0x0111
    # The SOP Class UID is a known UID of something other than a storage SOP class.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    # Also used for an instance of another study than the one of the request URL.
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Failure:
    """A part that was not stored, with the UIDs it names when they could be read.

    ``storage_failed`` is set when S3 or DynamoDB failed, so the same part may be stored by a
    later attempt. Other failures of 0xA700, such as a deflated data set that inflates past
    the limit, fail again on every attempt.
    """

    part: int
    reason: FailureReason
    message: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    storage_failed: bool = False
    # Not in the STOW-RS response, which names the instance by its SOP UIDs only.
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None


@dataclass(frozen=True)
class StowOutcome:
    """The HTTP status and DICOM JSON response of one store request."""

    status: HTTPStatus
    response: JsonDict
    stored: list[ArchivedInstance] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def render(self, media_type: str) -> str:
        """Encode the response data set in ``media_type``, one of ``RESPONSE_MEDIA_TYPES``."""
        if media_type == DICOM_XML_MEDIA_TYPE:
            return to_native_xml(self.response).decode("utf-8")
        return json.dumps(self.response, separators=(",", ":"))

    @property
    def warnings(self) -> list[str]:
        """Return one line per failed part, for Warning header fields."""
        return [
            f"part {failure.part} not stored (0x{failure.reason:04X}): {failure.message}"
            for failure in self.failures[:MAX_REPORTED_FAILURES]
        ]


def response_media_type(accept: str | None) -> str:
    """Return the media type of the STOW-RS response that ``accept`` prefers.

    Raises ``NotAcceptableError`` when it accepts neither DICOM JSON nor DICOM XML.
    """
    for media_range in parse_accept(accept):
        for media_type in RESPONSE_MEDIA_TYPES:
            if media_range.matches(media_type):
                return media_type
    raise NotAcceptableError(
        f"the STOW-RS response is available as {' or '.join(RESPONSE_MEDIA_TYPES)}; "
        f"Accept {accept!r} allows neither"
    )


def instance_parts(content_type: str | None, body: bytes) -> list[bytes]:
    """Return the Part 10 objects of a STOW-RS request body.

    Raises ``UnsupportedMediaTypeError`` unless the body is multipart/related with
    type="application/dicom" and every part is application/dicom, and
    ``InvalidRequestError`` for a malformed or empty body.
    """
    if not content_type:
        raise UnsupportedMediaTypeError(
            f"request has no Content-Type; STOW-RS accepts {ACCEPTED_CONTENT_TYPE}"
        )
    media = parse_media_type(content_type)
    if media.essence != MULTIPART_RELATED:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media.essence} is not supported; STOW-RS accepts "
            f"{ACCEPTED_CONTENT_TYPE}"
        )
    root_type = (media.param("type") or "").lower()
    if root_type != DICOM_MEDIA_TYPE:
        described = f"type={root_type}" if root_type else "no type parameter"
        raise UnsupportedMediaTypeError(
            f"multipart/related with {described} is not supported; STOW-RS accepts "
            f"{ACCEPTED_CONTENT_TYPE} (metadata with bulk data is not supported yet)"
        )
    multipart = parse_multipart_related(content_type, body)
    if not multipart.parts:
        raise InvalidRequestError("multipart body has no parts; send one instance per part")
    for number, part in enumerate(multipart.parts, start=1):
        if part.content_type is not None:
            part_type = parse_media_type(part.content_type).essence
            if part_type != DICOM_MEDIA_TYPE:
                raise UnsupportedMediaTypeError(
                    f"part {number} has Content-Type {part_type}; every part of "
                    f"{ACCEPTED_CONTENT_TYPE} must be {DICOM_MEDIA_TYPE}"
                )
    return [part.body for part in multipart.parts]


def store_instances(
    store: ObjectStore,
    site: str,
    parts: Sequence[bytes],
    base_url: str,
    study: str | None = None,
    claims: InstanceClaims | None = None,
) -> StowOutcome:
    """Archive each Part 10 object of ``parts`` and return the status and response dataset.

    With ``study`` (POST /studies/{study}), an instance of another study fails with 0xA900
    and is not stored. The status follows PS3.18 10.5.3: 200 when all are stored, 202 when
    some are, 409 when none are, but 503 when none are and only because S3 or DynamoDB failed.
    """
    stored: list[ArchivedInstance] = []
    failures: list[Failure] = []
    # TODO: during an S3 outage each part runs its own retries (up to about 15 s), so a body of
    # several parts can outlast API Gateway's 29 s integration time-out on AWS.
    for number, part10 in enumerate(parts, start=1):
        result = _store_part(store, site, part10, number, study, claims)
        if isinstance(result, Failure):
            failures.append(result)
        else:
            stored.append(result)
    status = _status(stored, failures)
    outcome = StowOutcome(status, _response(stored, failures, base_url), stored, failures)
    _log(outcome, len(parts), study)
    return outcome


def _store_part(
    store: ObjectStore,
    site: str,
    part10: bytes,
    number: int,
    study: str | None,
    claims: InstanceClaims | None,
) -> ArchivedInstance | Failure:
    try:
        header = parse_instance(part10)
        uids = _PartUids.read(header.dataset)
    except InvalidInstanceError as exc:
        return Failure(number, _reason(exc), str(exc))
    except NotImplementedError as exc:
        # pydicom raises this for an element with an unknown VR when its value is read.
        return Failure(number, FailureReason.CANNOT_UNDERSTAND, f"invalid data set: {exc}")
    result = _store_parsed_part(store, site, part10, header, uids, number, study, claims)
    if isinstance(result, Failure):
        # The InstanceRejected event names the study and series as far as they could be read.
        return replace(
            result, study_instance_uid=uids.study or None, series_instance_uid=uids.series
        )
    return result


@dataclass(frozen=True)
class _PartUids:
    """The UIDs of a STOW-RS part, as far as its data set has them."""

    sop_class: str | None
    sop_instance: str | None
    study: str
    series: str | None

    @classmethod
    def read(cls, dataset: Any) -> _PartUids:
        """Read the UIDs; raise ``NotImplementedError`` for an element pydicom cannot decode."""
        return cls(
            sop_class=str(dataset.get("SOPClassUID", "")) or None,
            sop_instance=str(dataset.get("SOPInstanceUID", "")) or None,
            study=str(dataset.get("StudyInstanceUID", "")),
            series=str(dataset.get("SeriesInstanceUID", "")) or None,
        )


def _store_parsed_part(
    store: ObjectStore,
    site: str,
    part10: bytes,
    header: InstanceHeader,
    uids: _PartUids,
    number: int,
    study: str | None,
    claims: InstanceClaims | None,
) -> ArchivedInstance | Failure:
    sop_class, sop_instance, instance_study = uids.sop_class, uids.sop_instance, uids.study
    if _is_known_non_storage_uid(sop_class):
        return Failure(
            number,
            FailureReason.SOP_CLASS_NOT_SUPPORTED,
            f"SOPClassUID (0008,0016) {sop_class} is not a storage SOP class",
            sop_class,
            sop_instance,
        )
    if study is not None and instance_study != study:
        return Failure(
            number,
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            f"instance belongs to study {instance_study or '(none)'}, not to the study "
            f"{study} of the request URL",
            sop_class,
            sop_instance,
        )
    try:
        checked = check_instance(part10, site, header)
        return archive_instance(store, site, part10, checked=checked, claims=claims)
    except ConflictError as exc:
        return Failure(
            number, FailureReason.DUPLICATE_SOP_INSTANCE, str(exc), sop_class, sop_instance
        )
    except InvalidInstanceError as exc:
        return Failure(number, _reason(exc), str(exc), sop_class, sop_instance)
    except NotImplementedError as exc:
        message = f"invalid data set: {exc}"
        return Failure(number, FailureReason.CANNOT_UNDERSTAND, message, sop_class, sop_instance)
    except StoreUnavailableError as exc:
        return Failure(
            number,
            FailureReason.OUT_OF_RESOURCES,
            str(exc),
            sop_class,
            sop_instance,
            storage_failed=True,
        )
    except Exception as exc:  # noqa: BLE001 (logged without its message)
        # One part must not fail the others, which may be stored already.
        logger.error(
            "STOW-RS part failed unexpectedly", extra={**exception_fields(exc), "part": number}
        )
        message = f"internal error while storing the part: {type(exc).__name__}"
        return Failure(number, FailureReason.PROCESSING_FAILURE, message, sop_class, sop_instance)


def _is_known_non_storage_uid(uid: str | None) -> bool:
    """Tell whether ``uid`` is in the DICOM UID registry as anything but a storage SOP class.

    Private and newer SOP classes are not in the registry and are accepted.
    """
    from pydicom.uid import UID

    registered = UID(uid or "")
    if not registered.type:
        return False
    return registered.type != "SOP Class" or _STORAGE_NAME.search(registered.name) is None


def _reason(exc: InvalidInstanceError) -> FailureReason:
    if isinstance(exc, InstanceTooLargeError):
        return FailureReason.OUT_OF_RESOURCES
    if exc.undecodable:
        return FailureReason.CANNOT_UNDERSTAND
    return FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS


def _status(stored: list[ArchivedInstance], failures: list[Failure]) -> HTTPStatus:
    if not failures:
        return HTTPStatus.OK
    if stored:
        return HTTPStatus.ACCEPTED
    if all(failure.storage_failed for failure in failures):
        return HTTPStatus.SERVICE_UNAVAILABLE
    return HTTPStatus.CONFLICT


def _response(stored: list[ArchivedInstance], failures: list[Failure], base_url: str) -> JsonDict:
    """Build the STOW-RS response dataset (PS3.18 10.5.3) as DICOM JSON."""
    response: JsonDict = {}
    studies = {archived.key.study for archived in stored}
    # Retrieve URL is Type 2 (PS3.18 Table I.1-1): present, and empty unless one study.
    response[_RETRIEVE_URL] = {"vr": "UR"}
    if len(studies) == 1:
        response[_RETRIEVE_URL] = _value("UR", study_url(base_url, studies.pop()))
    if failures:
        response[_FAILED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [_failed_item(failure) for failure in failures],
        }
    if stored:
        response[_REFERENCED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [_referenced_item(archived, base_url) for archived in stored],
        }
    return response


def _referenced_item(archived: ArchivedInstance, base_url: str) -> JsonDict:
    key = archived.key
    return {
        _REFERENCED_SOP_CLASS_UID: _value("UI", archived.sop_class_uid),
        _REFERENCED_SOP_INSTANCE_UID: _value("UI", key.sop),
        _RETRIEVE_URL: _value("UR", instance_url(base_url, key.study, key.series, key.sop)),
    }


def _failed_item(failure: Failure) -> JsonDict:
    item: JsonDict = {}
    if failure.sop_class_uid:
        item[_REFERENCED_SOP_CLASS_UID] = _value("UI", failure.sop_class_uid)
    if failure.sop_instance_uid:
        item[_REFERENCED_SOP_INSTANCE_UID] = _value("UI", failure.sop_instance_uid)
    item[_FAILURE_REASON] = _value("US", int(failure.reason))
    return item


def _value(vr: str, value: str | int) -> JsonDict:
    return {"vr": vr, "Value": [value]}


def _log(outcome: StowOutcome, parts: int, study: str | None) -> None:
    reasons = Counter(f"0x{failure.reason:04X}" for failure in outcome.failures)
    logger.log(
        logging.WARNING if outcome.failures else logging.INFO,
        "STOW-RS request completed",
        extra={
            "status": int(outcome.status),
            "parts": parts,
            "stored": len(outcome.stored),
            "failed": len(outcome.failures),
            "failure_reasons": dict(reasons),
            "failures": outcome.warnings,
            "study": study,
        },
    )
