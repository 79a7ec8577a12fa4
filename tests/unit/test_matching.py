"""Attribute matching (PS3.4 C.2.2.2) and QIDO parameter parsing."""

from __future__ import annotations

import pytest

from cirrus.errors import InvalidParameterError, InvalidRequestError
from cirrus.query.matching import Constraint
from cirrus.query.params import MAX_LIMIT, parse_qido_params, resolve_attribute

RECORD = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John", "Ideographic": "山田^太郎"}]},
    "00100020": {"vr": "LO", "Value": ["PID-42"]},
    "00080020": {"vr": "DA", "Value": ["20240315"]},
    "00080030": {"vr": "TM", "Value": ["101530.25"]},
    "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00180050": {"vr": "DS", "Value": [5.0]},
    "00080050": {"vr": "SH"},
    "00400275": {
        "vr": "SQ",
        "Value": [
            {"00400009": {"vr": "SH", "Value": ["SPS1"]}},
            {"00400009": {"vr": "SH", "Value": ["SPS2"]}, "00401001": {"vr": "SH"}},
        ],
    },
}


@pytest.mark.parametrize(
    ("tag", "vr", "values", "expected"),
    [
        ("00100010", "PN", ("Doe^John",), True),
        ("00100010", "PN", ("doe*",), True),
        ("00100010", "PN", ("D?e^J*",), True),
        ("00100010", "PN", ("Smith*",), False),
        ("00100010", "PN", ("山田*",), True),
        ("00100020", "LO", ("PID-42",), True),
        ("00100020", "LO", ("pid-42",), False),
        ("00100020", "LO", ("PID*",), True),
        ("00080020", "DA", ("20240101-20241231",), True),
        ("00080020", "DA", ("20240316-",), False),
        ("00080020", "DA", ("-20240315",), True),
        ("00080020", "DA", ("20240315",), True),
        ("00080030", "TM", ("1015-1016",), True),
        ("00080030", "TM", ("101530.3-",), False),
        ("00080030", "TM", ("101530.2-101530.3",), True),
        ("00080061", "CS", ("SR",), True),
        ("00080061", "CS", ("MR",), False),
        ("0020000D", "UI", ("1.2.4", "1.2.3"), True),
        ("0020000D", "UI", ("1.2.*",), False),
        ("00180050", "DS", ("5.000000",), True),
        ("00080050", "SH", ("",), True),
        ("00080050", "SH", ("A1",), False),
        ("00081030", "LO", ("*",), True),
        ("00400275.00400009", "SH", ("SPS2",), True),
        ("00400275.00400009", "SH", ("SPS*",), True),
        ("00400275.00400009", "SH", ("SPS3",), False),
        ("00400275.00401001", "SH", ("RP1",), False),
        ("00080050", "SH", ("*",), True),
        ("00080050", "SH", ("A*",), False),
    ],
)
def test_constraint_matching(tag: str, vr: str, values: tuple[str, ...], expected: bool) -> None:
    assert Constraint(tag, vr, values).matches(RECORD) is expected


def test_params_keyword_and_tag() -> None:
    assert resolve_attribute("PatientName") == ("00100010", "PN")
    assert resolve_attribute("0020000d") == ("0020000D", "UI")


def test_params_sequence_path() -> None:
    query = parse_qido_params(
        "SERIES", {"RequestAttributesSequence.ScheduledProcedureStepID": ["SPS1"]}
    )
    constraint = query.constraint("00400275.00400009")
    assert constraint is not None
    assert constraint.vr == "SH"
    assert constraint.top_level_tag == "00400275"


def test_params_path_through_non_sequence() -> None:
    with pytest.raises(InvalidRequestError, match="must be a sequence"):
        parse_qido_params("STUDY", {"PatientID.PatientName": ["x"]})


def test_params_unknown_attribute_ignored() -> None:
    query = parse_qido_params("STUDY", {"PatientNme": ["x"], "_": ["123"], "PatientID": ["7"]})
    assert [c.tag for c in query.constraints] == ["00100020"]
    assert len(query.warnings) == 2
    assert "'PatientNme' was ignored: unknown attribute 'PatientNme'" in query.warnings[0]
    assert "'_' was ignored" in query.warnings[1]


def test_params_unknown_includefield_ignored() -> None:
    query = parse_qido_params("STUDY", {"includefield": ["StudyID,Nonsense"]})
    assert query.includefields == {"00200010"}
    assert "includefield 'Nonsense' was ignored" in query.warnings[0]


def test_params_modalities_in_study_list() -> None:
    query = parse_qido_params("STUDY", {"ModalitiesInStudy": ["CT,MR", "SR"]})
    constraint = query.constraint("00080061")
    assert constraint is not None
    assert constraint.values == ("CT", "MR", "SR")
    record = {"00080061": {"vr": "CS", "Value": ["US", "MR"]}}
    assert constraint.matches(record)
    assert not constraint.matches({"00080061": {"vr": "CS", "Value": ["US"]}})


def test_params_uid_lists_merge() -> None:
    query = parse_qido_params(
        "STUDY", {"StudyInstanceUID": ["1.2,1.3", "1.4"], "includefield": ["StudyID,00081030"]}
    )
    constraint = query.constraint("0020000D")
    assert constraint is not None
    assert constraint.values == ("1.2", "1.3", "1.4")
    assert query.includefields == {"00200010", "00081030"}


def test_params_repeated_non_uid_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="only UIDs may be matched as a list"):
        parse_qido_params("STUDY", {"PatientID": ["a", "b"]})


def test_params_limit_offset() -> None:
    query = parse_qido_params("STUDY", {"limit": ["5"], "offset": ["10"], "includefield": ["all"]})
    assert (query.limit, query.offset, query.include_all) == (5, 10, True)
    capped = parse_qido_params("STUDY", {"limit": [str(MAX_LIMIT + 1)]})
    assert capped.limit == MAX_LIMIT
    assert capped.warnings
    with pytest.raises(InvalidRequestError, match="offset must be a non-negative integer"):
        parse_qido_params("STUDY", {"offset": ["-1"]})


def test_params_fuzzy_warns() -> None:
    query = parse_qido_params("STUDY", {"fuzzymatching": ["true"]})
    assert query.fuzzy
    assert "fuzzymatching is not supported" in query.warnings[0]


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "2020-2019",
        "20200101-20190101",
        "2020-01-01",
        "-",
        "20040230",
        "20231301",
        "20230001",
        "20230100",
        "20230229",
        "20200101-20200230",
        "-20041332",
    ],
)
def test_params_invalid_date_rejected(value: str) -> None:
    with pytest.raises(InvalidRequestError, match="StudyDate"):
        parse_qido_params("STUDY", {"StudyDate": [value]})


@pytest.mark.parametrize("value", ["25", "2400", "1260", "120061", "0800-2500", "12a0", "-"])
def test_params_invalid_time_rejected(value: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"StudyTime value .* is not a valid TM"):
        parse_qido_params("STUDY", {"StudyTime": [value]})


@pytest.mark.parametrize("value", ["23", "0000", "235960.123456", "0800-1200", "-1200", "08-"])
def test_params_valid_time_accepted(value: str) -> None:
    constraint = parse_qido_params("STUDY", {"StudyTime": [value]}).constraint("00080030")
    assert constraint is not None
    assert constraint.values == (value,)


@pytest.mark.parametrize(
    "value", ["20041301", "2004023012", "20040101250000", "20040101120000+1500", "202313"]
)
def test_params_invalid_datetime_rejected(value: str) -> None:
    with pytest.raises(InvalidRequestError, match="AcquisitionDateTime"):
        parse_qido_params("INSTANCE", {"AcquisitionDateTime": [value]})


@pytest.mark.parametrize(
    "value", ["2004", "200402", "20040229", "20040101120000.5+0100", "20040101-0500", "2004-2005"]
)
def test_params_valid_datetime_accepted(value: str) -> None:
    query = parse_qido_params("INSTANCE", {"AcquisitionDateTime": [value]})
    constraint = query.constraint("0008002A")
    assert constraint is not None
    assert constraint.values == (value,)


@pytest.mark.parametrize(
    "value", ["20200101", "20200101-", "-20200101", "20200101-20201231", "20240229"]
)
def test_params_valid_date_accepted(value: str) -> None:
    constraint = parse_qido_params("STUDY", {"StudyDate": [value]}).constraint("00080020")
    assert constraint is not None
    assert constraint.values == (value,)


def test_params_fuzzy_must_be_boolean() -> None:
    with pytest.raises(InvalidRequestError, match="fuzzymatching must be true or false"):
        parse_qido_params("STUDY", {"fuzzymatching": ["maybe"]})


@pytest.mark.parametrize(
    ("params", "parameter", "kind"),
    [
        (
            {"PatientBirthDate": ["19710123-19700101"]},
            "PatientBirthDate",
            "DA range ends before it starts",
        ),
        ({"PatientBirthDate": ["19710230"]}, "PatientBirthDate", "invalid DA value or range"),
        ({"StudyTime": ["2500"]}, "StudyTime", "invalid TM value or range"),
        ({"PatientName": ["Doe^Jane", "Roe^Richard"]}, "PatientName", "repeated"),
        ({"00100020": ["MRN-1", "MRN-2"]}, "PatientID", "repeated"),
        ({"LIMIT": ["Doe"]}, "limit", "not a non-negative integer"),
        ({"fuzzymatching": ["Doe"]}, "fuzzymatching", "not true or false"),
        (
            {"PatientName.PatientID": ["Doe"]},
            "PatientName.PatientID",
            "attribute path through an attribute that is not a sequence",
        ),
    ],
)
def test_params_error_names_parameter_not_value(
    params: dict[str, list[str]], parameter: str, kind: str
) -> None:
    with pytest.raises(InvalidParameterError) as raised:
        parse_qido_params("STUDY", params)

    assert raised.value.parameter == parameter
    assert raised.value.kind == kind
    for values in params.values():
        for value in values:
            assert value not in raised.value.parameter
            assert value not in raised.value.kind


@pytest.mark.parametrize(
    ("stored", "requested", "expected"),
    [
        # 12:00 at UTC-05:00 is 17:00 UTC.
        ("20240101120000-0500", "20240101163000+0000-20240101173000+0000", True),
        ("20240101120000-0500", "20240101110000-20240101130000", False),
        ("20240101120000+0100", "20240101110000-20240101110000", True),
        # A negative offset on the low side of a range.
        ("20240101180000", "20240101120000-0500-20240102", True),
        ("20240101160000", "20240101120000-0500-20240102", False),
        # Partial values name periods: the whole year, the whole day.
        ("20241231235959.5", "2024-2024", True),
        ("20250101000000", "2024-2024", False),
        ("20240229", "20240229-20240229", True),
        ("20240301", "-20240229", False),
    ],
)
def test_datetime_range_utc(stored: str, requested: str, expected: bool) -> None:
    query = parse_qido_params("INSTANCE", {"AcquisitionDateTime": [requested]})
    [constraint] = query.constraints
    assert constraint.is_range
    record = {"0008002A": {"vr": "DT", "Value": [stored]}}
    assert constraint.matches(record) is expected


def test_datetime_single_with_offset_not_range() -> None:
    query = parse_qido_params("INSTANCE", {"AcquisitionDateTime": ["20240101120000-0500"]})
    [constraint] = query.constraints
    assert not constraint.is_range


JAPANESE = {
    "00100010": {
        "vr": "PN",
        "Value": [
            {
                "Alphabetic": "Yamada^Tarou^^",
                "Ideographic": "山田^太郎",
                "Phonetic": "やまだ^たろう",
            }
        ],
    }
}


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("yamada^tarou", True),
        ("Yamada^Tarou^^", True),
        ("Y?mada^T?rou", True),
        ("Yamada?Tarou", True),
        ("Yam?da", False),
        ("山田^太郎", True),
        ("山?^*", True),
        ("やまだ*", True),
        ("Yamada^Tarou=山田^太郎", True),
        ("=山田^太郎", True),
        ("Yamada*=山田^次郎", False),
        ("==やまだ^たろう", True),
        ("Tanaka*", False),
    ],
)
def test_person_name_groups(requested: str, expected: bool) -> None:
    [constraint] = parse_qido_params("STUDY", {"PatientName": [requested]}).constraints
    assert constraint.matches(JAPANESE) is expected
