"""Fuzzing of Accept and Content-Type parsing and of the choice of a representation.

Header values are random text and lists of media ranges with random parameters, weights and
transfer syntaxes. Parsing and every negotiation step of STOW-RS, WADO-RS instances and
frames must return a choice or raise a ``CirrusError`` whose HTTP status is 4xx.
"""

from __future__ import annotations

from http import HTTPStatus

from hypothesis import example, given
from hypothesis import strategies as st
from pydicom.uid import UID

from cirrus.dicomweb.errors import status_of
from cirrus.dicomweb.media import parse_accept, parse_media_type, rejected_ranges
from cirrus.dicomweb.negotiation import (
    DICOM_MEDIA_TYPE,
    FRAME_ROOT_TYPES,
    acceptable_types,
    describe,
    frame_choices,
    instance_choices,
)
from cirrus.dicomweb.stow import RESPONSE_MEDIA_TYPES, response_media_type
from cirrus.dicomweb.wado import DICOM_JSON_MEDIA_TYPE
from cirrus.errors import CirrusError
from tests.fuzzing import fuzz_settings, mostly

STORED_SYNTAXES = [
    UID("1.2.840.10008.1.2"),
    UID("1.2.840.10008.1.2.1"),
    UID("1.2.840.10008.1.2.2"),
    UID("1.2.840.10008.1.2.4.50"),
    UID("1.2.840.10008.1.2.4.70"),
    UID("1.2.840.10008.1.2.4.90"),
    UID("1.2.840.10008.1.2.5"),
]
essence_list = st.sampled_from(
    [
        "*/*",
        "multipart/*",
        "multipart/related",
        "application/dicom",
        "application/dicom+json",
        "application/dicom+xml",
        "application/json",
        "application/octet-stream",
        "image/jls",
        "image/jpeg",
        "image/*",
        "*/json",
    ]
)
# Mostly well-formed values, so that most headers get past parsing to negotiation.
essences = mostly(essence_list, st.text(max_size=20))
param_value_list = st.sampled_from(
    [
        "*",
        '"*"',
        "application/dicom",
        '"application/dicom"',
        "image/jls",
        "image/*",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.50",
        "1.2.3.4",
        '"unterminated',
        "",
    ]
)
param_values = mostly(param_value_list, st.text(max_size=20))
weight_list = st.sampled_from(
    ["0", "1", "0.5", "1.000", "1.5", "-1", "nan", "inf", "1e-400", "", "x", "\u0660.\u0665"]
)
weights = mostly(weight_list, st.floats(allow_nan=True).map(str))


@st.composite
def media_ranges(draw: st.DrawFn) -> str:
    params = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(
            st.sampled_from(["type", "transfer-syntax", "q", "charset"]) | st.text(max_size=8)
        )
        value = draw(weights) if name == "q" else draw(param_values)
        params.append(f"{name}={value}")
    separator = draw(st.sampled_from([";", "; ", " ;", ";;"]))
    return separator.join([draw(essences), *params])


accept_values = st.one_of(
    st.none(),
    st.text(max_size=100),
    st.lists(media_ranges(), max_size=5).map(", ".join),
    st.lists(media_ranges(), max_size=5).map(",".join),
    st.lists(media_ranges(), min_size=1, max_size=3).map(", ".join),
)


def check_rejection(exc: CirrusError) -> None:
    status = status_of(exc)
    assert HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR, (status, exc)


@fuzz_settings(500)
@given(value=accept_values, stored=st.sampled_from(STORED_SYNTAXES))
@example(value="application/dicom; q=\u0660.\u0665", stored=STORED_SYNTAXES[0])
@example(value='multipart/related; type="image/*"', stored=STORED_SYNTAXES[3])
def test_accept_negotiation_or_4xx(value: str | None, stored: UID) -> None:
    try:
        ranges = parse_accept(value)
        rejected_ranges(value)
    except CirrusError as exc:
        check_rejection(exc)
        return
    assert all(0 < media.quality <= 1 for media in ranges)
    try:
        media_type = response_media_type(value)
    except CirrusError as exc:
        check_rejection(exc)
    else:
        assert media_type in RESPONSE_MEDIA_TYPES
    for root_types, single_part in (
        ((DICOM_MEDIA_TYPE,), False),
        ((DICOM_JSON_MEDIA_TYPE,), False),
        (FRAME_ROOT_TYPES, True),
    ):
        acceptable = acceptable_types(value, root_types, single_part=single_part)
        assert isinstance(describe(acceptable), str)
    instance_choices(acceptable_types(value, (DICOM_MEDIA_TYPE,)), stored)
    frame_choices(acceptable_types(value, FRAME_ROOT_TYPES, single_part=True), stored)


@fuzz_settings(300)
@given(value=st.one_of(st.text(max_size=100), media_ranges()))
def test_content_type_parsed_or_4xx(value: str) -> None:
    try:
        media = parse_media_type(value)
    except CirrusError as exc:
        check_rejection(exc)
        return
    assert media.essence == media.essence.lower()
    assert "/" in media.essence
