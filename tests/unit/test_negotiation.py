"""Accept negotiation of WADO-RS instances and frames, without AWS."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from cirrus.dicom.transcode import CODEC_ERRORS, error_reason
from cirrus.dicomweb.negotiation import (
    DICOM_MEDIA_TYPE,
    FRAME_ROOT_TYPES,
    OCTET_STREAM,
    acceptable_types,
    describe,
    frame_choices,
    instance_choices,
    producible_syntaxes,
)
from cirrus.errors import InvalidRequestError
from tests.pydicom_files import bundled

EXPLICIT = "1.2.840.10008.1.2.1"
DICOM_TYPE = 'multipart/related; type="application/dicom"'
OCTETS_TYPE = 'multipart/related; type="application/octet-stream"'


def instance_syntaxes(accept: str | None, stored: UID) -> list[str]:
    acceptable = acceptable_types(accept, (DICOM_MEDIA_TYPE,))
    return [str(choice.transfer_syntax) for choice in instance_choices(acceptable, stored)]


def frame_types(accept: str | None, stored: UID, frames: int = 1) -> list[str]:
    acceptable = acceptable_types(accept, FRAME_ROOT_TYPES, single_part=frames == 1)
    return [choice.part_type for choice in frame_choices(acceptable, stored)]


def test_instance_default_is_explicit_le() -> None:
    for accept in (None, "*/*", "multipart/*", 'multipart/related; type="application/dicom"'):
        assert instance_syntaxes(accept, JPEG2000Lossless) == [EXPLICIT], accept


def test_instance_lossy_falls_back_to_stored() -> None:
    accept = 'multipart/related; type="application/dicom"'
    assert instance_syntaxes(accept, JPEGBaseline8Bit) == [EXPLICIT, str(JPEGBaseline8Bit)]


def test_instance_quoted_and_unquoted_syntax() -> None:
    for value in ("1.2.840.10008.1.2.5", '"1.2.840.10008.1.2.5"'):
        accept = f"multipart/related; type=application/dicom; transfer-syntax={value}"
        assert instance_syntaxes(accept, ExplicitVRLittleEndian) == [str(RLELossless)], value


def test_instance_wildcard_syntax_is_stored() -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    assert instance_syntaxes(accept, JPEG2000) == [str(JPEG2000)]
    # PS3.18 8.7.3: big endian is not used in web services, so "any" means little endian.
    assert instance_syntaxes(accept, ExplicitVRBigEndian) == [EXPLICIT]


def test_instance_quality_order() -> None:
    accept = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.5; q=0.5,'
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80,'
        'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.1'
    )
    assert instance_syntaxes(accept, JPEG2000Lossless) == [
        str(JPEGLSLossless),
        str(RLELossless),
        str(JPEG2000Lossless),
    ]


def test_instance_lossy_target_not_produced() -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert instance_syntaxes(accept, ExplicitVRLittleEndian) == []
    assert instance_syntaxes(accept, JPEGBaseline8Bit) == [str(JPEGBaseline8Bit)]


def test_instance_q0_excludes_wildcard_match() -> None:
    accept = f'*/*, multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}; q=0'
    assert instance_syntaxes(accept, RLELossless) == []


def test_instance_q0_without_syntax_names_default() -> None:
    accept = f"{DICOM_TYPE}; transfer-syntax=*, {DICOM_TYPE}; q=0"
    assert instance_syntaxes(accept, RLELossless) == [str(RLELossless)]
    assert instance_syntaxes(DICOM_TYPE + f", {DICOM_TYPE}; q=0", ExplicitVRBigEndian) == []
    assert instance_syntaxes(accept, ExplicitVRBigEndian) == []
    everything = f"*/*, {DICOM_TYPE}; transfer-syntax=*; q=0"
    assert instance_syntaxes(everything, RLELossless) == []


def test_instance_other_types_ignored() -> None:
    for accept in (
        "application/dicom+json",
        "image/jpeg",
        "*/*; q=0",
        'multipart/related; type="image/jls"',
    ):
        assert instance_syntaxes(accept, ExplicitVRLittleEndian) == [], accept


def test_instance_unknown_syntax_unusable() -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3.4'
    assert instance_syntaxes(accept, ExplicitVRLittleEndian) == []


def test_private_stored_syntax_only_as_stored() -> None:
    private = UID("1.2.840.113619.5.2")
    assert instance_syntaxes(f"{DICOM_TYPE}; transfer-syntax=*", private) == [str(private)]
    assert instance_syntaxes(DICOM_TYPE, private) == []
    assert frame_types(f"{OCTETS_TYPE}; transfer-syntax=*", private) == []


def test_malformed_accept_raises() -> None:
    with pytest.raises(InvalidRequestError):
        acceptable_types("multipart/related; q=2", (DICOM_MEDIA_TYPE,))


def test_frames_octet_stream_default() -> None:
    label = f"{OCTET_STREAM}; transfer-syntax={EXPLICIT}"
    assert frame_types(None, RLELossless) == [label]
    assert frame_types(f'multipart/related; type="{OCTET_STREAM}"', ExplicitVRBigEndian) == [label]


def test_frames_lossy_falls_back_to_stored() -> None:
    assert frame_types(OCTETS_TYPE, JPEGBaseline8Bit) == [
        f"{OCTET_STREAM}; transfer-syntax={EXPLICIT}",
        "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
    ]


def test_frames_octet_stream_wildcard() -> None:
    accept = f'multipart/related; type="{OCTET_STREAM}"; transfer-syntax=*'
    assert frame_types(accept, RLELossless) == [f"{OCTET_STREAM}; transfer-syntax={RLELossless}"]
    assert frame_types(accept, ExplicitVRBigEndian) == [
        f"{OCTET_STREAM}; transfer-syntax={EXPLICIT}"
    ]


def test_frames_image_types() -> None:
    assert frame_types("image/jls", ExplicitVRLittleEndian) == [
        "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    ]
    assert frame_types('multipart/related; type="image/jp2"', JPEG2000) == [
        "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91",
        "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90",
    ]
    # No JPEG encoder is installed, so image/jpeg works only for instances stored as JPEG.
    assert frame_types("image/jpeg", ExplicitVRLittleEndian) == []
    assert frame_types("image/jpeg", JPEGBaseline8Bit) == [
        "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    ]


def test_frames_syntax_of_other_media_type() -> None:
    accept = 'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.90'
    assert frame_types(accept, ExplicitVRLittleEndian) == []


def test_frames_single_part_needs_one_frame() -> None:
    assert frame_types("image/jls", ExplicitVRLittleEndian, frames=2) == []
    acceptable = acceptable_types("image/jls", FRAME_ROOT_TYPES, single_part=True)
    (choice,) = frame_choices(acceptable, ExplicitVRLittleEndian)
    assert choice.multipart is False


def test_refused_accept_is_named() -> None:
    acceptable = acceptable_types("image/png", FRAME_ROOT_TYPES, single_part=True)

    assert frame_choices(acceptable, ExplicitVRLittleEndian) == []
    assert describe(acceptable) == "image/png"


def test_producible_syntaxes_of_native_instance() -> None:
    syntaxes = producible_syntaxes(ExplicitVRLittleEndian)

    assert {RLELossless, JPEGLSLossless, JPEG2000Lossless, ExplicitVRLittleEndian} <= set(syntaxes)
    assert ExplicitVRBigEndian not in producible_syntaxes(ExplicitVRBigEndian)


@pytest.mark.parametrize(
    ("syntax", "detail"),
    [
        (JPEGLSLossless, "(0028,0100) Bits Allocated: 32"),
        (JPEG2000Lossless, "pylibjpeg: Invalid 'bits_stored' value '32'"),
    ],
)
def test_codec_reason_keeps_its_details(syntax: UID, detail: str) -> None:
    ds = pydicom.dcmread(bundled("SC_rgb_rle_32bit_2frame.dcm"))
    ds.decompress()
    with pytest.raises(CODEC_ERRORS) as info:
        ds.compress(syntax)

    reason = error_reason(info.value)
    assert detail in reason
    assert "\n" not in reason
    assert not reason.endswith(":")
