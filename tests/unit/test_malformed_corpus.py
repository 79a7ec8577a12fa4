"""The whole malformed corpus (``tests/malformed.py``) through the parser, STOW-RS and ingest.

STOW-RS runs ``store_instances`` on an in-memory store, between a valid instance before and
one after in the same request. Ingest runs ``read_header`` with the ranged reads it makes on
S3, which must agree with a parse of the whole object. The network paths take a subset:
``tests/integration/test_malformed_stow.py``, ``tests/gateway/test_malformed_cstore.py``.
"""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from cirrus.archive import check_header
from cirrus.dicom.dicomjson import instance_metadata
from cirrus.dicom.instance import parse_instance
from cirrus.dicomweb.stow import FailureReason, store_instances
from cirrus.errors import InvalidInstanceError
from cirrus.ingest import read_header
from tests.malformed import CANNOT_UNDERSTAND, STORED, MalformedInput, fresh_seed, full_corpus
from tests.unit.test_fuzz_instance import BytesReader, MemoryStore

KEY = "default/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm"
SITE = "default"
CORPUS = full_corpus()
BASE_URL = "http://127.0.0.1/dicomweb"
# Valid instances with UIDs of their own, sent before and after each malformed one.
BEFORE = fresh_seed("MR_small.dcm", generate_uid())
AFTER = fresh_seed("CT_small.dcm", generate_uid())
# pydicom warns about each invalid value it decodes.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def stow_outcome(case: MalformedInput) -> tuple[int, str]:
    """Store the case between two valid instances; return its failure reason and message."""
    store = MemoryStore()
    before, after = BEFORE.data, AFTER.data
    outcome = store_instances(store, SITE, [before, case.data, after], BASE_URL)  # type: ignore[arg-type]
    stored_parts = {
        archived.stored.key: store.objects[archived.stored.key] for archived in outcome.stored
    }
    assert len(outcome.stored) + len(outcome.failures) == 3
    assert before in stored_parts.values()
    assert after in stored_parts.values()
    if not outcome.failures:
        assert case.data in stored_parts.values()  # stored whole, as sent
        return STORED, ""
    (failure,) = outcome.failures
    assert failure.part == 2
    assert len(store.objects) == 2
    return int(failure.reason), failure.message


def ingest_outcome(data: bytes) -> tuple[bool, str]:
    """Read the header as ingest does; return whether it parsed and the error message."""
    reader = BytesReader(data)
    try:
        header, size = read_header(reader, KEY)
    except InvalidInstanceError as exc:
        return False, str(exc)
    assert size == len(data)
    instance_metadata(header)
    return True, ""


def test_corpus_size() -> None:
    names = [case.name for case in CORPUS]
    assert len(names) == len(set(names))
    assert len(CORPUS) > 1000
    assert sum(case.expected == STORED for case in CORPUS) >= 20


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.name)
def test_malformed_input_outcome(case: MalformedInput) -> None:
    reason, message = stow_outcome(case)
    assert reason == case.expected, message
    assert reason != FailureReason.PROCESSING_FAILURE
    assert case.reason in message.lower()
    if reason != STORED:
        assert message
    parsed, ingest_message = ingest_outcome(case.data)
    try:
        whole = parse_instance(case.data)
    except InvalidInstanceError:
        whole = None
    assert parsed == (whole is not None), ingest_message
    if reason == CANNOT_UNDERSTAND:
        assert not parsed or _fails_check(whole)
    if reason == STORED:
        assert parsed, ingest_message


def _fails_check(header: object) -> bool:
    try:
        check_header(header, SITE)  # type: ignore[arg-type]
    except InvalidInstanceError as exc:
        return exc.undecodable
    return False
