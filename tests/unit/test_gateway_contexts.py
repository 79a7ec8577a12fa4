"""The gateway's supported presentation contexts, which pynetdicom copies for each association."""

from __future__ import annotations

import copy

from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom.presentation import PresentationContext

from cirrus.gateway.server import _SupportedContext


def storage_context() -> PresentationContext:
    context = PresentationContext()
    context.abstract_syntax = CTImageStorage
    context.transfer_syntax = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    context.scu_role = False
    context.scp_role = True
    return context


def test_supported_context_copy_equals_original() -> None:
    original = storage_context()

    copied = copy.deepcopy(_SupportedContext.from_context(original))

    assert vars(copied) == vars(original)
    assert copied.abstract_syntax == CTImageStorage
    assert copied.transfer_syntax == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert (copied.scu_role, copied.scp_role) == (False, True)


def test_supported_context_copy_independent() -> None:
    supported = _SupportedContext.from_context(storage_context())

    copied = copy.deepcopy(supported)
    copied.context_id = 3
    copied.add_transfer_syntax(JPEGBaseline8Bit)

    assert copied is not supported
    assert supported.context_id is None
    assert supported.transfer_syntax == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert copied.transfer_syntax[-1] == JPEGBaseline8Bit
