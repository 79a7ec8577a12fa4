"""The presentation contexts that a C-MOVE proposes, and the syntax each instance is sent in."""

from __future__ import annotations

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from cirrus.gateway.suboperations import (
    MAX_PROPOSED_CONTEXTS,
    choose_syntax,
    proposed_contexts,
)
from cirrus.index.reader import InstanceRef

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _ref(sop_class: str, syntax: str, number: int = 1) -> InstanceRef:
    return InstanceRef(
        site="s",
        study="1.2",
        series="1.2.3",
        sop=f"1.2.3.{number}",
        sop_class_uid=sop_class,
        object_key=f"key-{number}",
        transfer_syntax=syntax,
        size=0,
        pixel_offset=None,
        pixel_length=None,
    )


def test_contexts_per_class_and_syntax() -> None:
    refs = [
        _ref(CT, ExplicitVRLittleEndian, 1),
        _ref(CT, JPEG2000Lossless, 2),
        _ref(MR, RLELossless, 3),
        _ref(MR, RLELossless, 4),
    ]
    proposed = [(str(cx.abstract_syntax), cx.transfer_syntax) for cx in proposed_contexts(refs)]
    assert proposed == [
        (CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (MR, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CT, [JPEG2000Lossless]),
        (MR, [RLELossless]),
    ]


def test_contexts_capped_uncompressed_first() -> None:
    classes = [f"1.2.840.10008.5.1.4.1.1.{number}" for number in range(100)]
    refs = [_ref(cls, JPEGLSLossless, number) for number, cls in enumerate(classes)]
    contexts = proposed_contexts(refs)
    assert len(contexts) == MAX_PROPOSED_CONTEXTS
    uncompressed = [cx for cx in contexts if cx.transfer_syntax[0] == ExplicitVRLittleEndian]
    assert len(uncompressed) == 100


def test_choose_stored_syntax() -> None:
    accepted = [ExplicitVRLittleEndian, JPEG2000Lossless]
    assert choose_syntax(JPEG2000Lossless, accepted) == JPEG2000Lossless


def test_choose_prefers_explicit() -> None:
    accepted = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    assert choose_syntax(RLELossless, accepted) == ExplicitVRLittleEndian


def test_choose_implicit_for_big_endian() -> None:
    assert choose_syntax(ExplicitVRBigEndian, [ImplicitVRLittleEndian]) == ImplicitVRLittleEndian


def test_choose_lossless_encoding() -> None:
    assert choose_syntax(ExplicitVRLittleEndian, [RLELossless]) == RLELossless


def test_choose_deflated() -> None:
    accepted = [DeflatedExplicitVRLittleEndian]
    assert choose_syntax(JPEGLSLossless, accepted) == DeflatedExplicitVRLittleEndian


def test_choose_none_for_lossy_target() -> None:
    # Nothing is encoded with loss, so an uncompressed instance cannot go as JPEG Baseline.
    assert choose_syntax(ExplicitVRLittleEndian, [JPEGBaseline8Bit]) is None


def test_choose_none_for_unknown_source() -> None:
    private = UID("1.2.826.0.1.3680043.9.9999.1")
    assert choose_syntax(private, [ExplicitVRLittleEndian]) is None
