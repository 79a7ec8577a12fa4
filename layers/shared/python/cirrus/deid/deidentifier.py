"""De-identification of DICOM instances (PS3.15 Annex E, Basic Application Level Confidentiality
Profile) with keyed, repeatable replacements.

Every replacement that must agree across instances is derived with HMAC-SHA256 from a secret key:

- a replaced UID is ``2.25.`` and the decimal form of a version 8 UUID made from
  HMAC(key, UID). The same UID gets the same replacement in every instance, at any depth,
  and in every run with the same key, so references such as Referenced SOP Instance UID
  follow;
- Patient ID and Patient's Name become ``ANON`` and 16 hexadecimal digits of HMAC(key,
  Patient ID), so one patient's studies stay together;
- with shifted dates, each patient's dates move back by 1 to 3650 days, taken from HMAC(key,
  Patient ID).

Without a key, a random key is drawn per ``Deidentifier``, so replacements agree within one run
only. Private attributes are always removed (the Retain Safe Private Option is not offered), as
are curve data and overlay data and comments. Content Sequence (0040,A730), the structured
content of an SR document or an image, is replaced by one dummy TEXT item, because the Clean
Structured Content Option is not offered. An instance whose Burned In Annotation (0028,0301)
is YES is rejected, because the profile does not clean pixel data.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import logging
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from cirrus.deid.profile import CONTENT_SEQUENCES, Action, DateHandling, ProfileOptions

logger = logging.getLogger(__name__)

MIN_KEY_BYTES: Final = 16
MAX_DATE_SHIFT_DAYS: Final = 3650

_DUMMY_TEXT: Final = "ANONYMIZED"
# A dummy value that is valid for every VR of its group (PS3.5 6.2).
_DUMMY_BY_VR: Final[dict[str, Any]] = {
    "AS": "000D",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "AT": 0,
    **dict.fromkeys(("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"), 0),
    # Eight bytes are a whole number of values for OB, OW, OL, OF, OV and OD.
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), bytes(8)),
}
# File meta attributes that name the systems an instance passed through (PS3.10 7.1).
_IDENTIFYING_META: Final = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
_BURNED_IN_ANNOTATION: Final = 0x00280301
_PATIENT_ID: Final = 0x00100020
_PATIENT_NAME: Final = 0x00100010
_PIXEL_DATA: Final = 0x7FE00010


class DeidentificationError(Exception):
    """An instance that cannot be de-identified, with the reason."""


@dataclass
class Deidentifier:
    """Applies the profile with ``options`` to datasets, with replacements keyed by ``key``."""

    options: ProfileOptions = field(default_factory=ProfileOptions)
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(
                f"de-identification key has {len(self.key)} bytes; use at least {MIN_KEY_BYTES}"
            )

    def deidentify(self, ds: Dataset) -> None:
        """De-identify ``ds`` and its file meta in place.

        Raises ``DeidentificationError`` when ``ds`` cannot be de-identified safely or its
        elements cannot be decoded.
        """
        try:
            if str(ds.get(_BURNED_IN_ANNOTATION, DataElement(0, "CS", "")).value).upper() == "YES":
                raise DeidentificationError(
                    "instance has Burned In Annotation (0028,0301) YES; its pixel data may show "
                    "patient identity, and cleaning pixel data is not supported"
                )
            patient_id = str(ds.get(_PATIENT_ID, DataElement(0, "LO", "")).value or "")
            pseudonym = self.patient_pseudonym(patient_id)
            context = _Context(pseudonym, self.date_shift_days(patient_id))
            self._clean(ds, context)
        except DeidentificationError:
            raise
        except (ValueError, TypeError, KeyError, NotImplementedError, OverflowError) as exc:
            # pydicom's message may quote the value that failed, which may identify the patient.
            raise DeidentificationError(
                f"data set cannot be decoded ({type(exc).__name__})"
            ) from exc
        self._mark(ds)
        self._clean_file_meta(ds)

    def deidentify_part10(self, part10: bytes) -> bytes:
        """Return the de-identified form of the Part 10 object ``part10``, in its transfer syntax.

        Raises ``DeidentificationError`` for an object that cannot be read or de-identified.
        """
        try:
            ds = dcmread(io.BytesIO(part10))
        except (InvalidDicomError, ValueError, TypeError, EOFError, OSError) as exc:
            raise DeidentificationError(
                f"not a readable DICOM Part 10 object ({type(exc).__name__})"
            ) from exc
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            raise DeidentificationError(
                "file meta has no Transfer Syntax UID (0002,0010); the sender must set it"
            )
        self.deidentify(ds)
        buffer = io.BytesIO()
        try:
            dcmwrite(buffer, ds, enforce_file_format=True)
        except AttributeError as exc:
            # pydicom raises AttributeError for missing file meta elements and names them,
            # such as "(0002,0003) Media Storage SOP Instance UID", without their values.
            raise DeidentificationError(f"de-identified instance cannot be written: {exc}") from exc
        except (ValueError, TypeError, OverflowError) as exc:
            raise DeidentificationError(
                f"de-identified instance cannot be written ({type(exc).__name__})"
            ) from exc
        return buffer.getvalue()

    def replace_uid(self, uid: str) -> str:
        """Return the replacement of ``uid``: the same for the same key and UID."""
        digest = self._digest(b"uid", uid.strip().rstrip("\0"))
        value = int.from_bytes(digest[:16], "big")
        # Set the version (8, custom) and variant bits of RFC 9562.
        value = (value & ~(0xF << 76)) | (0x8 << 76)
        value = (value & ~(0x3 << 62)) | (0x2 << 62)
        return f"2.25.{uuid.UUID(int=value).int}"

    def patient_pseudonym(self, patient_id: str) -> str:
        """Return the Patient ID that replaces ``patient_id``."""
        return "ANON" + self._digest(b"patient", patient_id.strip()).hex()[:16].upper()

    def date_shift_days(self, patient_id: str) -> int:
        """Return the days by which the dates of ``patient_id`` move (negative: into the past)."""
        digest = self._digest(b"date", patient_id.strip())
        return -(int.from_bytes(digest[:8], "big") % MAX_DATE_SHIFT_DAYS + 1)

    def _digest(self, purpose: bytes, value: str) -> bytes:
        return hmac.new(self.key, purpose + b"\0" + value.encode(), hashlib.sha256).digest()

    def _clean(self, ds: Dataset, context: _Context) -> None:
        for tag in list(ds.keys()):
            if tag.is_private:
                del ds[tag]
                continue
            elem = ds[tag]
            vr = _effective_vr(elem)
            action = self.options.resolve(tag, vr)
            if action is Action.KEEP:
                continue
            if action is Action.REMOVE:
                del ds[tag]
            elif action is Action.CLEAN_ITEMS:
                self._clean_items(elem, vr, context)
            elif action is Action.EMPTY:
                _set_empty(ds, tag, vr, context)
            elif action is Action.DUMMY:
                _set_dummy(ds, tag, vr, context, self)
            elif action is Action.REPLACE_UID:
                _set_value(ds, tag, vr, [self.replace_uid(str(v)) for v in _values(elem)])
            elif action is Action.SHIFT_DATE:
                shifted = [_shift(str(v), vr, context.shift_days) for v in _values(elem)]
                _set_value(ds, tag, vr, shifted)

    def _clean_items(self, elem: DataElement, vr: str, context: _Context) -> None:
        if vr != "SQ":
            return
        for item in elem.value or ():
            self._clean(item, context)

    def _mark(self, ds: Dataset) -> None:
        """Record the de-identification in the attributes that PS3.3 C.7.1.1 defines for it."""
        ds.PatientIdentityRemoved = "YES"
        method = ["DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile"]
        items = []
        for value, meaning in self.options.method_codes():
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
            if value != "113100":
                method.append(meaning[:64])
        ds.DeidentificationMethod = method
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        longitudinal = {
            DateHandling.REMOVE: "REMOVED",
            DateHandling.RETAIN: "UNMODIFIED",
            DateHandling.SHIFT: "MODIFIED",
        }
        ds.LongitudinalTemporalInformationModified = longitudinal[self.options.dates]

    def _clean_file_meta(self, ds: Dataset) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            meta = ds.file_meta = FileMetaDataset()
        for tag in _IDENTIFYING_META:
            if tag in meta:
                del meta[tag]
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID


@dataclass(frozen=True)
class _Context:
    """The replacements that depend on the instance's patient."""

    pseudonym: str
    shift_days: int


def _effective_vr(elem: DataElement) -> str:
    """Return the element's VR, or the dictionary's when it was read as UN."""
    if elem.VR in ("UN", None):
        try:
            return str(dictionary_VR(elem.tag)).split(" or ")[0]
        except KeyError:
            return "UN"
    return str(elem.VR).split(" or ")[0]


def _values(elem: DataElement) -> Iterable[Any]:
    if elem.value is None or elem.value == "":
        return []
    if elem.VM > 1:
        return list(elem.value)
    return [elem.value]


def _set_value(ds: Dataset, tag: BaseTag, vr: str, values: list[Any]) -> None:
    """Replace the element ``tag`` with one of VR ``vr`` and ``values`` (none: zero length)."""
    value: Any = None
    if len(values) == 1:
        value = values[0]
    elif values:
        value = values
    ds[tag] = DataElement(tag, vr, value)


def _set_empty(ds: Dataset, tag: BaseTag, vr: str, context: _Context) -> None:
    if tag == _PATIENT_NAME:
        # Z allows a dummy value: the pseudonym keeps one patient's studies together.
        _set_value(ds, tag, vr, [context.pseudonym])
    elif vr == "SQ":
        ds[tag] = DataElement(tag, "SQ", Sequence())
    else:
        _set_value(ds, tag, vr, [])


def _set_dummy(
    ds: Dataset, tag: BaseTag, vr: str, context: _Context, deidentifier: Deidentifier
) -> None:
    if tag in (_PATIENT_ID, _PATIENT_NAME):
        _set_value(ds, tag, vr, [context.pseudonym])
    elif tag in CONTENT_SEQUENCES:
        ds[tag] = DataElement(tag, "SQ", Sequence([_dummy_content_item()]))
    elif vr == "SQ":
        ds[tag] = DataElement(tag, "SQ", Sequence([_dummy_code()]))
    elif vr == "UI":
        old = [str(v) for v in _values(ds[tag])] or ["0"]
        _set_value(ds, tag, vr, [deidentifier.replace_uid(v) for v in old])
    else:
        _set_value(ds, tag, vr, [_DUMMY_BY_VR.get(vr, _DUMMY_TEXT)])


def _dummy_code() -> Dataset:
    """Return a code item of a private coding scheme (prefix "99") that names no one."""
    item = Dataset()
    item.CodeValue = "DEID"
    item.CodingSchemeDesignator = "99CIRRUS"
    item.CodeMeaning = "De-identified"
    return item


def _dummy_content_item() -> Dataset:
    """Return a TEXT content item (PS3.3 C.17.3) that replaces the whole structured content."""
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([_dummy_code()])
    item.TextValue = _DUMMY_TEXT
    return item


def _shift(value: str, vr: str, days: int) -> str:
    """Return the DA or DT ``value`` moved by ``days``; empty when it is not a valid date."""
    text = value.strip()
    if vr == "DA":
        text = text.replace(".", "")
    date_part, rest = text[:8], text[8:]
    try:
        date = datetime.datetime.strptime(date_part, "%Y%m%d").date()
        shifted = date + datetime.timedelta(days=days)
    except (ValueError, OverflowError):
        # A partial date (a year only) or a malformed one cannot be shifted exactly: remove it.
        return ""
    if shifted.year < 1:
        return ""
    return shifted.strftime("%Y%m%d").zfill(8) + (rest if vr == "DT" else "")
