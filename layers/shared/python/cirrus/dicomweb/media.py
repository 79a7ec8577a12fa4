"""Media types of HTTP header fields: Content-Type (RFC 9110 8.3) and Accept (RFC 9110 12.5.1).

Parameter values may be tokens or quoted strings, so a comma or semicolon inside quotes does not
split a list, as in ``multipart/related; type="application/dicom"; transfer-syntax=*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from cirrus.errors import InvalidParameterError

# RFC 9110 5.6.2: the characters of a token.
_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_WHITESPACE: Final = " \t"


@dataclass(frozen=True)
class MediaType:
    """A media type or media range with its parameters.

    ``essence`` is ``type/subtype`` in lower case. Parameter names are in lower case, and values
    are unquoted but otherwise as sent. ``quality`` is the Accept weight (1.0 elsewhere).
    """

    essence: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @property
    def type(self) -> str:
        return self.essence.partition("/")[0]

    @property
    def subtype(self) -> str:
        return self.essence.partition("/")[2]

    def param(self, name: str) -> str | None:
        """Return the value of parameter ``name`` (case-insensitive), or None."""
        return self.params.get(name.lower())

    def matches(self, essence: str) -> bool:
        """Tell whether this media range (``*/*``, ``type/*`` or exact) covers ``essence``."""
        target_type, _, target_subtype = essence.lower().partition("/")
        if self.essence == "*/*":
            return True
        if self.subtype == "*":
            return self.type == target_type
        return self.essence == f"{target_type}/{target_subtype}"


def parse_media_type(value: str) -> MediaType:
    """Parse one Content-Type value, or raise ``InvalidParameterError`` naming the problem."""
    media, position = _parse_one(value, 0, header="Content-Type")
    if position < len(value):
        raise _malformed(
            "Content-Type",
            f"Content-Type {value!r} has unexpected text at offset {position}; "
            "send one media type with its parameters",
        )
    return media


def parse_accept(value: str | None) -> list[MediaType]:
    """Parse an Accept value into its media ranges, best first. Absent or empty is ``*/*``.

    Ranges with ``q=0`` are left out because they name what the client does not accept (see
    ``rejected_ranges``). Ranges of equal weight keep the order in which the client sent them.
    """
    ranges = [media for media in _parse_ranges(value) if media.quality > 0]
    return sorted(ranges, key=lambda media: -media.quality)


def rejected_ranges(value: str | None) -> list[MediaType]:
    """Return the media ranges of an Accept value that have ``q=0`` (RFC 9110 12.4.2)."""
    return [media for media in _parse_ranges(value) if media.quality == 0]


def _parse_ranges(value: str | None) -> list[MediaType]:
    if value is None or not value.strip(_WHITESPACE):
        return [MediaType("*/*")]
    ranges: list[MediaType] = []
    position = 0
    while position < len(value):
        position = _skip(value, position, _WHITESPACE + ",")
        if position >= len(value):
            break
        media, position = _parse_one(value, position, header="Accept")
        ranges.append(media)
        position = _skip(value, position, _WHITESPACE)
        if position < len(value) and value[position] != ",":
            raise _malformed(
                "Accept",
                f"Accept {value!r} has unexpected text at offset {position}; "
                "separate media ranges with ','",
            )
    return ranges


def format_media_type(essence: str, params: dict[str, str]) -> str:
    """Format ``essence`` with ``params``, quoting each value that is not a token."""
    return "; ".join([essence, *(f"{name}={_quote(value)}" for name, value in params.items())])


def _parse_one(value: str, position: int, *, header: str) -> tuple[MediaType, int]:
    """Parse ``type/subtype *( ; name=value )`` from ``position`` up to ',' or the end."""
    position = _skip(value, position, _WHITESPACE)
    essence, position = _token(value, position)
    if not essence or position >= len(value) or value[position] != "/":
        raise _malformed(
            header,
            f"{header} {value!r} is not a media type; expected type/subtype, "
            'such as multipart/related; type="application/dicom"',
        )
    subtype, position = _token(value, position + 1)
    if not subtype:
        raise _malformed(header, f"{header} {value!r} has a media type without a subtype")
    params: dict[str, str] = {}
    quality = 1.0
    while True:
        position = _skip(value, position, _WHITESPACE)
        if position >= len(value) or value[position] != ";":
            break
        position = _skip(value, position + 1, _WHITESPACE)
        if position >= len(value) or value[position] in ",;":
            continue  # an empty parameter, which RFC 9110 allows
        name, position = _token(value, position)
        if not name or position >= len(value) or value[position] != "=":
            raise _malformed(
                header, f"{header} {value!r} has a parameter without '=' at offset {position}"
            )
        param_value, position = _param_value(value, position + 1, header)
        name = name.lower()
        if header == "Accept" and name == "q":
            quality = _quality(param_value, value)
        else:
            params[name] = param_value
    media = MediaType(f"{essence}/{subtype}".lower(), params, quality)
    return media, position


def _param_value(value: str, position: int, header: str) -> tuple[str, int]:
    if position < len(value) and value[position] == '"':
        chars: list[str] = []
        position += 1
        while position < len(value):
            char = value[position]
            if char == "\\" and position + 1 < len(value):
                chars.append(value[position + 1])
                position += 2
            elif char == '"':
                return "".join(chars), position + 1
            else:
                chars.append(char)
                position += 1
        raise _malformed(header, f"{header} {value!r} has an unterminated quoted string")
    # Lenient: some senders leave values such as boundary=----=_Part_1 unquoted although '='
    # is not a token character, so an unquoted value runs to the next separator.
    stops = _WHITESPACE + (";," if header == "Accept" else ";")
    start = position
    while position < len(value) and value[position] not in stops:
        position += 1
    return value[start:position], position


def _quality(text: str, value: str) -> float:
    try:
        quality = float(text)
    except ValueError:
        quality = -1.0
    if not 0.0 <= quality <= 1.0:
        raise InvalidParameterError(
            f"Accept {value!r} has the weight q={text}; use 0 to 1",
            parameter="Accept",
            kind="weight outside 0 to 1",
        )
    return quality


def _malformed(header: str, message: str) -> InvalidParameterError:
    return InvalidParameterError(message, parameter=header, kind="malformed media type")


def _token(value: str, position: int) -> tuple[str, int]:
    start = position
    while position < len(value) and value[position] in _TOKEN_CHARS:
        position += 1
    return value[start:position], position


def _skip(value: str, position: int, chars: str) -> int:
    while position < len(value) and value[position] in chars:
        position += 1
    return position


def _quote(value: str) -> str:
    if value and all(char in _TOKEN_CHARS for char in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
