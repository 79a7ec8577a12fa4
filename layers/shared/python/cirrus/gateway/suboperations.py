"""The C-STORE sub-operations of a retrieve: which syntax each instance is sent in, and its data.

An instance goes in its stored transfer syntax when the peer accepted that syntax for its SOP
class, with its data set unchanged. Otherwise it is transcoded (``cirrus.dicom.transcode``,
lossless only) to an accepted syntax: Explicit VR Little Endian first, then Implicit VR Little
Endian, then a compressed syntax that can be encoded without loss. When no accepted syntax can
be produced, the sub-operation fails and the instance is listed in Failed SOP Instance UID
List (0008,0058).

For C-MOVE the gateway proposes, for each SOP class of the matches, one presentation context
per stored transfer syntax and one with Explicit and Implicit VR Little Endian. For C-GET the
requester's own proposals, with the SCP role for itself, decide (PS3.4 C.4.3.3.1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from io import BytesIO
from typing import Final

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.presentation import PresentationContext, build_context

from cirrus.dicom.transcode import LOSSLESS_ENCODINGS, can_transcode, transcode
from cirrus.index.reader import InstanceRef
from cirrus.storage.objects import ObjectStore

# PS3.8 9.3.2.2: an A-ASSOCIATE-RQ has at most 128 presentation contexts (odd IDs 1 to 255).
MAX_PROPOSED_CONTEXTS: Final = 128

UNCOMPRESSED_SYNTAXES: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Targets of a transcode, in order of preference.
_TRANSCODE_TARGETS: Final = (
    *UNCOMPRESSED_SYNTAXES,
    DeflatedExplicitVRLittleEndian,
    *(UID(syntax) for syntax in LOSSLESS_ENCODINGS),
)


class SubOperationError(Exception):
    """An instance cannot be sent: it is missing, unreadable or has no usable context."""


def accepted_syntaxes(contexts: Iterable[PresentationContext]) -> dict[str, list[UID]]:
    """Return, per SOP class, the transfer syntaxes in which the local AE may send (SCU role)."""
    accepted: dict[str, list[UID]] = {}
    for context in contexts:
        if not context.as_scu or context.abstract_syntax is None:
            continue
        accepted.setdefault(str(context.abstract_syntax), []).append(context.transfer_syntax[0])
    return accepted


def choose_syntax(stored: UID, accepted: Sequence[UID]) -> UID | None:
    """Return the syntax to send an instance stored in ``stored`` in, or None if there is none."""
    if stored in accepted:
        return stored
    for target in _TRANSCODE_TARGETS:
        if target in accepted and can_transcode(stored, target):
            return target
    return None


def proposed_contexts(refs: Sequence[InstanceRef]) -> list[PresentationContext]:
    """Return the presentation contexts that a C-MOVE proposes to its destination.

    The uncompressed context of every SOP class comes first, so that beyond 128 contexts it is
    a stored syntax that is left out, and those instances are transcoded.
    """
    classes: dict[str, None] = {}
    stored: dict[tuple[str, str], None] = {}
    for ref in refs:
        classes.setdefault(ref.sop_class_uid, None)
        if ref.transfer_syntax not in UNCOMPRESSED_SYNTAXES:
            stored.setdefault((ref.sop_class_uid, ref.transfer_syntax), None)
    contexts = [build_context(sop_class, list(UNCOMPRESSED_SYNTAXES)) for sop_class in classes]
    contexts.extend(build_context(sop_class, [syntax]) for sop_class, syntax in stored)
    # NOTE: instances of a SOP class past the first 128 classes get no context and fail.
    return contexts[:MAX_PROPOSED_CONTEXTS]


def load_for_sending(
    store: ObjectStore, ref: InstanceRef, accepted: Mapping[str, Sequence[UID]]
) -> Dataset:
    """Read one instance from S3 and return it, in a syntax the peer accepted, ready to send.

    Raises ``SubOperationError`` with the reason when it cannot be sent. Only this one
    instance is in memory: its bytes until they are parsed, then the data set alone.
    """
    stored = UID(ref.transfer_syntax or ExplicitVRLittleEndian)
    syntaxes = accepted.get(ref.sop_class_uid, [])
    if not syntaxes:
        raise SubOperationError(
            f"the peer accepted no presentation context for SOP class {ref.sop_class_uid}"
        )
    target = choose_syntax(stored, syntaxes)
    if target is None:
        names = ", ".join(str(syntax) for syntax in syntaxes)
        raise SubOperationError(
            f"stored transfer syntax {stored} cannot be sent in the accepted syntaxes {names}"
        )
    data = store.get(ref.object_key)
    if target != stored:
        data = transcode(data, target)
    ds = pydicom.dcmread(BytesIO(data))
    # pydicom keeps the source buffer for deferred reads, which a parsed data set never makes.
    # Dropping it frees the object's bytes before pynetdicom encodes the data set again.
    ds.buffer = None
    del data
    if str(ds.get("SOPInstanceUID", "")) != ref.sop:
        raise SubOperationError(f"object {ref.object_key} does not contain instance {ref.sop}")
    return ds
