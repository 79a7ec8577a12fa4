"""Fuzzing of the QIDO-RS query parser and of the matching and planning that follow it.

Parameters are dicts of keywords, tags, tag paths, the QIDO control parameters and random
names, each with one or more values: random text, dates, times and date-times, ranges of
them, numbers with non-ASCII digits, wildcards and UID lists. ``parse_qido_params`` must
return a query or raise ``InvalidParameterError``. A parsed query must then plan its index
reads and match a stored instance's attributes without raising.
"""

from __future__ import annotations

from functools import cache

from hypothesis import example, given
from hypothesis import strategies as st

from cirrus.dicom.dicomjson import instance_metadata
from cirrus.dicom.instance import parse_instance
from cirrus.errors import InvalidParameterError
from cirrus.index.attributes import JsonDict
from cirrus.query.params import INSTANCE, MAX_LIMIT, SERIES, STUDY, parse_qido_params
from cirrus.query.plan import plan_studies
from cirrus.query.qido import usable_constraints
from tests.fuzzing import fuzz_settings, mostly
from tests.pydicom_files import bundled

NAMES = [
    "limit",
    "offset",
    "fuzzymatching",
    "includefield",
    "LIMIT",
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AcquisitionDateTime",
    "ModalitiesInStudy",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "AccessionNumber",
    "InstanceNumber",
    "Rows",
    "PixelSpacing",
    "00100010",
    "00080020",
    "7FE00010",
    "FFFFFFFF",
    "60000010",
    "RequestAttributesSequence.ScheduledProcedureStepID",
    "ReferencedSeriesSequence.SeriesInstanceUID",
    "PatientName.PatientID",
    "0040A370.00400009",
    ".",
    "..",
    "_",
]
VALUES = [
    "",
    "*",
    "?",
    "true",
    "false",
    "all",
    "0",
    "1",
    "1000",
    "1001",
    "-1",
    "²",
    "\u0663",
    "1e3",
    "20040119",
    "20040119-",
    "-20040119",
    "20040119-20041231",
    "20041231-20040119",
    "20040230",
    "2004011",
    "\u0662\u0660\u0660\u0664\u0660\u0661\u0661\u0669",
    "0800-1200",
    "2460",
    "120000.1234567",
    "20040119120000.000000+0500",
    "20040119120000-0500",
    "20040119-0500-20050101",
    "2004-2005-2006",
    "--",
    "1.2.3,1.2.4",
    "1.2.3\\1.2.4",
    "CT,MR",
    "Smith^J*",
    "=山田",
    "PatientName,StudyDate",
    "00100010,bogus",
]
DATE_TIME_NAMES = ["StudyDate", "StudyTime", "AcquisitionDateTime", "00080020", "PatientBirthDate"]
DATE_TIME_VALUES = [value for value in VALUES if value[:1].isdigit() or value[:1] == "-"]
generic_values = mostly(
    st.sampled_from(VALUES), st.one_of(st.text(max_size=40), st.from_regex(r"[0-9.\-+&]{0,30}"))
)
# Date and time values are built from digits, "-", "." and "+", so that most reach the
# calendar checks rather than failing the format check.
date_time_values = mostly(
    st.sampled_from(DATE_TIME_VALUES), st.from_regex(r"[0-9]{0,14}(\.[0-9]{0,7})?-?[0-9]{0,14}")
)
parameters = st.one_of(
    st.tuples(
        mostly(st.sampled_from(NAMES), st.text(max_size=30)),
        st.lists(generic_values, min_size=1, max_size=3),
    ),
    st.tuples(st.sampled_from(DATE_TIME_NAMES), st.lists(date_time_values, min_size=1, max_size=2)),
)
params = st.lists(parameters, max_size=6).map(dict)


@cache
def record() -> JsonDict:
    """Return the DICOM JSON of a stored CT instance, as the index matches it."""
    return instance_metadata(parse_instance(bundled("CT_small.dcm").read_bytes()))


@fuzz_settings(500)
@given(level=st.sampled_from([STUDY, SERIES, INSTANCE]), query=params)
@example(level=STUDY, query={"limit": ["²"]})
@example(level=STUDY, query={"offset": ["¹"]})
def test_qido_params_parsed_or_rejected(level: str, query: dict[str, list[str]]) -> None:
    try:
        parsed = parse_qido_params(level, query)
    except InvalidParameterError as exc:
        assert exc.parameter
        assert exc.kind
        return
    assert 1 <= parsed.limit <= MAX_LIMIT
    assert parsed.offset >= 0
    constraints, _ = usable_constraints(parsed)
    plan_studies("default", parsed, None)
    for constraint in constraints:
        assert isinstance(constraint.matches(record()), bool)
