"""Choice of media type and transfer syntax for WADO-RS responses (PS3.18 8.7.3 to 8.7.8).

The Accept header lists media ranges with weights. For each stored instance, the ranges that
name a representation of the resource become a list of ``Choice`` values, best weight first,
and the retrieve code sends the first choice it can produce. PS3.18 8.7.8.2 lets each part of
a response have its own transfer syntax.

Transfer syntax defaults (PS3.18 8.7.3.3 and Tables 8.7.3-2, 8.7.3-4 and 8.7.3-5):

- A DICOM or octet-stream range without a transfer-syntax parameter means Explicit VR Little
  Endian. When decoding fails, an instance stored lossy may be sent in its stored syntax.
- ``transfer-syntax=*`` means any syntax, so an instance is sent as stored, except that one
  stored in Explicit VR Big Endian is sent in Explicit VR Little Endian, because PS3.18 8.7.3
  states that big endian is not used in web services. Frames are never big endian either:
  uncompressed bulk data is little endian (PS3.18 8.7.3.3.1).
- An image media type (image/jls, ...) without the parameter means its stored syntax when
  the instance is stored in one of that media type's syntaxes, else the media type's default.

A range with ``q=0`` excludes the syntax it names even when a wildcard would allow it. Without
a transfer-syntax parameter it names the default syntax, and with ``*`` every syntax.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cirrus.dicom.transcode import (
    LOSSLESS_ENCODINGS,
    NATIVE_TARGETS,
    can_decode,
    can_encode,
    is_compressed,
    is_lossy,
)
from cirrus.dicom.uids import EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN
from cirrus.dicomweb.media import MediaType, format_media_type, parse_accept, rejected_ranges
from cirrus.dicomweb.multipart import MULTIPART_RELATED

if TYPE_CHECKING:
    from pydicom.uid import UID

DICOM_MEDIA_TYPE: Final = "application/dicom"
OCTET_STREAM: Final = "application/octet-stream"
ANY_SYNTAX: Final = "*"
_WILDCARDS: Final = ("*/*", "multipart/*")

# PS3.18 Table 8.7.3-5: the transfer syntaxes of each compressed bulk data media type, with
# the default one first. image/jpeg defaults to JPEG Lossless SV1 for single-frame images.
FRAME_MEDIA_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
    ),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
}
FRAME_ROOT_TYPES: Final = (OCTET_STREAM, *FRAME_MEDIA_TYPES)


@dataclass(frozen=True)
class AcceptableType:
    """One media range of an Accept header, reduced to the representation it requests.

    ``media_type`` is the root type (application/dicom, application/octet-stream, image/jls,
    ...). ``transfer_syntax`` is the parameter's value, ``*`` or None when absent.
    ``multipart`` is False for a single-part media range such as a bare ``image/jls``.
    """

    media_type: str
    transfer_syntax: str | None
    multipart: bool = True


@dataclass(frozen=True)
class Choice:
    """A representation to try: a media type and the transfer syntax of its content."""

    media_type: str
    transfer_syntax: UID
    multipart: bool = True

    @property
    def part_type(self) -> str:
        """Return the Content-Type of one part, which names the transfer syntax sent."""
        return format_media_type(self.media_type, {"transfer-syntax": str(self.transfer_syntax)})


@dataclass(frozen=True)
class Acceptable:
    """The acceptable types of a request, best first, and the ones that ``q=0`` excludes."""

    types: list[AcceptableType]
    rejected: list[AcceptableType]
    # The Accept value, which error messages name when none of its types is served here.
    header: str | None = None

    def excludes(self, choice: Choice) -> bool:
        """Tell whether a ``q=0`` range names ``choice``.

        A range without a transfer-syntax parameter names the media type's default syntax,
        and ``transfer-syntax=*`` names every syntax of the media type.
        """
        for rejected in self.rejected:
            if rejected.media_type != choice.media_type:
                continue
            named = rejected.transfer_syntax or _default_syntax(rejected.media_type)
            if named in (ANY_SYNTAX, choice.transfer_syntax):
                return True
        return False


def acceptable_types(
    accept: str | None, root_types: Collection[str], *, single_part: bool = False
) -> Acceptable:
    """Reduce an Accept value to the types among ``root_types`` that it accepts.

    ``root_types[0]`` is used for ``*/*`` and ``multipart/*``. A bare media type counts only
    when ``single_part`` is set. Raises ``InvalidRequestError`` for a malformed header.
    """
    default = next(iter(root_types))
    types = _reduce(parse_accept(accept), root_types, default, single_part)
    rejected = _reduce(rejected_ranges(accept), root_types, default, single_part, wildcards=False)
    return Acceptable(types, rejected, accept)


def instance_choices(acceptable: Acceptable, stored: UID) -> list[Choice]:
    """Return the transfer syntaxes in which to try sending an instance stored in ``stored``."""
    choices: list[Choice] = []
    for requested in acceptable.types:
        if requested.transfer_syntax is None:
            choices.append(Choice(DICOM_MEDIA_TYPE, _uid(EXPLICIT_VR_LITTLE_ENDIAN)))
            if is_lossy(stored):
                # PS3.18 8.7.3.4 lets a server send lossy Pixel Data in its stored syntax.
                choices.append(Choice(DICOM_MEDIA_TYPE, stored))
        elif requested.transfer_syntax == ANY_SYNTAX:
            choices.append(Choice(DICOM_MEDIA_TYPE, _any_syntax(stored)))
        else:
            choices.append(Choice(DICOM_MEDIA_TYPE, _uid(requested.transfer_syntax)))
    return _usable(acceptable, choices, lambda syntax: _can_produce(stored, syntax))


def frame_choices(acceptable: Acceptable, stored: UID) -> list[Choice]:
    """Return the media types and transfer syntaxes in which to try sending frames."""
    choices: list[Choice] = []
    for requested in acceptable.types:
        syntax = requested.transfer_syntax
        if requested.media_type == OCTET_STREAM:
            if syntax is None:
                target = _uid(EXPLICIT_VR_LITTLE_ENDIAN)
            elif syntax == ANY_SYNTAX:
                target = stored if is_compressed(stored) else _uid(EXPLICIT_VR_LITTLE_ENDIAN)
            else:
                target = _uid(syntax)
            if target == EXPLICIT_VR_LITTLE_ENDIAN or target == stored:
                choices.append(Choice(OCTET_STREAM, target, requested.multipart))
            if syntax is None and is_lossy(stored) and _media_type_of(stored):
                # PS3.18 8.7.3.3 lets lossy frames go as stored when they cannot be decoded.
                choices.append(Choice(_media_type_of(stored), stored, requested.multipart))
            continue
        syntaxes = FRAME_MEDIA_TYPES[requested.media_type]
        if syntax is None or syntax == ANY_SYNTAX:
            default = _uid(syntaxes[0])
            targets = [stored, default] if stored in syntaxes else [default]
        else:
            targets = [_uid(syntax)] if _uid(syntax) in syntaxes else []
        choices.extend(
            Choice(requested.media_type, target, requested.multipart) for target in targets
        )
    return _usable(acceptable, choices, lambda syntax: _can_produce(stored, syntax))


def describe(acceptable: Acceptable) -> str:
    """Return the requested representations for an error message, such as ``image/jls (*)``.

    When no range of the Accept value names a type of the resource, the value itself is named.
    """
    names = [
        f"{requested.media_type} ({requested.transfer_syntax or 'default transfer syntax'})"
        for requested in acceptable.types
    ]
    if names:
        return ", ".join(names)
    return acceptable.header.strip()[:200] if acceptable.header else "the default media type"


def _reduce(
    ranges: Iterable[MediaType],
    root_types: Collection[str],
    default: str,
    single_part: bool,
    *,
    wildcards: bool = True,
) -> list[AcceptableType]:
    types: list[AcceptableType] = []
    for media in ranges:
        syntax = media.param("transfer-syntax")
        if media.essence in _WILDCARDS:
            if wildcards:
                types.append(AcceptableType(default, None))
        elif media.essence == MULTIPART_RELATED:
            root = _root_type(media.param("type"), root_types, default)
            if root is not None:
                types.append(AcceptableType(root, syntax))
        elif single_part and media.essence in root_types:
            types.append(AcceptableType(media.essence, syntax, multipart=False))
    return types


def _root_type(value: str | None, root_types: Collection[str], default: str) -> str | None:
    """Return the root type that a multipart ``type`` parameter names, or None."""
    if value is None:
        return default
    root = MediaType(value.strip().lower())
    if root.essence in root_types:
        return root.essence
    return default if root.subtype == "*" and root.matches(default) else None


def _uid(value: str) -> UID:
    """Return ``value`` as a pydicom ``UID``, which imports pydicom on the first call."""
    from pydicom.uid import UID

    return UID(value)


def _media_type_of(syntax: str) -> str:
    """Return the image media type of a compressed syntax, or "" when it has none."""
    return next((name for name, uids in FRAME_MEDIA_TYPES.items() if syntax in uids), "")


def _default_syntax(media_type: str) -> UID:
    syntaxes = FRAME_MEDIA_TYPES.get(media_type)
    return _uid(syntaxes[0] if syntaxes else EXPLICIT_VR_LITTLE_ENDIAN)


def _any_syntax(stored: UID) -> UID:
    """Return the syntax that ``transfer-syntax=*`` selects for an instance stored in ``stored``."""
    return _uid(EXPLICIT_VR_LITTLE_ENDIAN) if stored == EXPLICIT_VR_BIG_ENDIAN else stored


def producible_syntaxes(stored: UID) -> list[UID]:
    """Return the transfer syntaxes an instance stored in ``stored`` can be sent in, sorted."""
    targets = {_uid(syntax) for syntax in (*NATIVE_TARGETS, *LOSSLESS_ENCODINGS)}
    if is_compressed(stored):
        targets.add(stored)
    return sorted(syntax for syntax in targets if _can_produce(stored, syntax))


def _can_produce(stored: UID, target: UID) -> bool:
    if target == stored:
        return True
    return target.is_transfer_syntax and can_decode(stored) and can_encode(target)


def _usable(
    acceptable: Acceptable, choices: list[Choice], producible: Callable[[UID], bool]
) -> list[Choice]:
    usable: list[Choice] = []
    for choice in choices:
        if choice in usable or acceptable.excludes(choice):
            continue
        if producible(choice.transfer_syntax):
            usable.append(choice)
    return usable
