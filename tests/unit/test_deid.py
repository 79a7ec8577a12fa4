"""De-identification against the profile's own table of attributes (PS3.15 table E.1-1)."""

from __future__ import annotations

import datetime
import io
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cirrus.deid import DateHandling, DeidentificationError, Deidentifier, ProfileOptions
from cirrus.deid.profile import PROFILE_ACTIONS, Action
from tests.pydicom_files import all_bundled, bundled

KEY = b"0123456789abcdef0123456789abcdef"
MARKER = "IDENTXYZ"
MARKER_DATE = "20010203"
STRING_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
# Sequences that table E.1-1 does not list, so the profile keeps them and cleans their items.
CARRIER_SEQUENCES = [
    "PerformedProtocolCodeSequence",
    "AnatomicRegionSequence",
    "ReferencedSeriesSequence",
    "SharedFunctionalGroupsSequence",
]


def _table_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return None


def _marker(tag: int, vr: str) -> object | None:
    """Return a value of ``vr`` that identifies ``tag`` in the output, or None to skip it."""
    if vr in STRING_VRS:
        return MARKER if vr in ("AE", "CS") else f"{MARKER}{tag:08X}"
    if vr == "DA":
        return MARKER_DATE
    if vr == "DT":
        return MARKER_DATE + "101112"
    if vr == "TM":
        return "101112"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.10.99.{tag}"
    return None


def _table_attributes() -> list[tuple[int, str, Action]]:
    rows = []
    for tag, action in sorted(PROFILE_ACTIONS.items()):
        vr = _table_vr(tag)
        if vr is None or tag >> 16 in (0x0000, 0x0002) or not keyword_for_tag(tag):
            continue
        if _marker(tag, vr) is None and vr != "SQ":
            continue
        rows.append((tag, vr, action))
    return rows


TABLE = _table_attributes()


def _identifying_item() -> Dataset:
    """Return an item that contains every attribute of the table with a marker value."""
    item = Dataset()
    for tag, vr, _ in TABLE:
        if vr == "SQ":
            inner = Dataset()
            inner.PatientName = f"{MARKER}^INNER"
            item[tag] = DataElement(tag, "SQ", Sequence([inner]))
        else:
            item[tag] = DataElement(tag, vr, _marker(tag, vr))
    return item


def _instance(ds: Dataset | None = None, patient_id: str = "PAT-1") -> Dataset:
    ds = ds if ds is not None else Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.get("SOPInstanceUID") or generate_uid()
    ds.StudyInstanceUID = ds.get("StudyInstanceUID") or generate_uid()
    ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "DOE^JANE"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _round_trip(ds: Dataset, deidentifier: Deidentifier) -> tuple[Dataset, bytes]:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    out = deidentifier.deidentify_part10(buffer.getvalue())
    return dcmread(io.BytesIO(out)), out


def _check_table(ds: Dataset, deidentifier: Deidentifier, where: str) -> None:
    pseudonym = deidentifier.patient_pseudonym("PAT-1")
    for tag, vr, action in TABLE:
        name = f"{keyword_for_tag(tag)} {Tag(tag)} {where}"
        marker = _marker(tag, vr)
        if action is Action.REMOVE:
            assert tag not in ds, name
        elif action is Action.EMPTY and vr != "SQ":
            value = ds[tag].value if tag in ds else None
            assert value in (None, "", pseudonym), name
        elif action is Action.EMPTY:
            assert tag not in ds or len(ds[tag].value) == 0, name
        elif action is Action.REPLACE_UID:
            assert ds[tag].value == deidentifier.replace_uid(str(marker)), name
        elif vr == "SQ":
            for item in ds[tag].value:
                assert MARKER not in str(item.get("PatientName", "")), name
        elif action is Action.DUMMY:
            assert tag in ds, name
            assert ds[tag].value != marker, name


def _assert_no_marker(out: bytes) -> None:
    assert MARKER.encode() not in out
    assert MARKER_DATE.encode() not in out
    assert b"1.2.826.0.1.3680043.10.99." not in out


def test_carrier_sequences_not_in_table() -> None:
    for keyword in CARRIER_SEQUENCES:
        assert tag_for_keyword(keyword) not in PROFILE_ACTIONS, keyword


def test_table_has_rows_of_every_action() -> None:
    actions = {action for _, _, action in TABLE}
    assert {Action.REMOVE, Action.EMPTY, Action.DUMMY, Action.REPLACE_UID} <= actions
    assert len(TABLE) > 300


def test_top_level_attributes_follow_table() -> None:
    deidentifier = Deidentifier(key=KEY)
    ds, out = _round_trip(_instance(_identifying_item()), deidentifier)
    _check_table(ds, deidentifier, "at the top level")
    _assert_no_marker(out)


def test_nested_attributes_follow_table() -> None:
    deidentifier = Deidentifier(key=KEY)
    ds = _instance()
    inner = Dataset()
    inner.ReferencedSeriesSequence = Sequence([_identifying_item()])
    middle = Dataset()
    middle.AnatomicRegionSequence = Sequence([inner, _identifying_item()])
    ds.SharedFunctionalGroupsSequence = Sequence([middle])
    result, out = _round_trip(ds, deidentifier)
    deepest = result.SharedFunctionalGroupsSequence[0].AnatomicRegionSequence[0]
    _check_table(deepest.ReferencedSeriesSequence[0], deidentifier, "three levels down")
    _check_table(
        result.SharedFunctionalGroupsSequence[0].AnatomicRegionSequence[1], deidentifier, "2"
    )
    _assert_no_marker(out)


def test_private_attributes_removed() -> None:
    ds = _instance()
    block = ds.private_block(0x0029, "ACME IDENT", create=True)
    block.add_new(0x10, "LO", MARKER)
    private_item = _identifying_item()
    block.add_new(0x11, "SQ", Sequence([private_item]))
    carrier = Dataset()
    carrier.add_new(0x00330010, "LO", "OTHER CREATOR")
    carrier.add_new(0x00331001, "LO", MARKER)
    ds.AnatomicRegionSequence = Sequence([carrier])
    result, out = _round_trip(ds, Deidentifier(key=KEY))
    assert not any(elem.tag.is_private for elem in result.iterall())
    assert b"ACME IDENT" not in out
    _assert_no_marker(out)


def test_overlays_and_curves_removed() -> None:
    ds = _instance()
    ds.add_new(0x60003000, "OW", bytes(8))
    ds.add_new(0x60024000, "LT", MARKER)
    ds.add_new(0x60020010, "US", 512)
    ds.add_new(0x50003000, "OW", bytes(8))
    ds.add_new(0x501E0010, "US", 1)
    result, out = _round_trip(ds, Deidentifier(key=KEY))
    _assert_no_marker(out)
    for tag in (0x60003000, 0x60024000, 0x50003000, 0x501E0010):
        assert tag not in result, hex(tag)
    assert result[0x60020010].value == 512


def test_person_codes_replaced() -> None:
    ds = _instance()
    code = Dataset()
    code.CodeValue = "EMP-IDENTXYZ"
    code.CodingSchemeDesignator = "99HOSPITAL"
    code.CodeMeaning = f"Operator {MARKER}"
    operator = Dataset()
    operator.PersonIdentificationCodeSequence = Sequence([code])
    operator.InstitutionName = MARKER
    ds.OperatorIdentificationSequence = Sequence([operator])
    result, out = _round_trip(ds, Deidentifier(key=KEY))
    _assert_no_marker(out)
    replaced = result.OperatorIdentificationSequence[0].PersonIdentificationCodeSequence
    assert len(replaced) == 1
    assert replaced[0].CodingSchemeDesignator == "99CIRRUS"


def _content_item(value_type: str, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type
    concept = Dataset()
    concept.CodeValue = "121071"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Finding"
    item.ConceptNameCodeSequence = Sequence([concept])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _sr_with_identity() -> Dataset:
    """Return a Comprehensive SR whose content items name the patient and the reader."""
    ds = _instance()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    nested = _content_item("TEXT", TextValue=f"Seen by {MARKER} in clinic")
    container = _content_item("CONTAINER", ContinuityOfContent="SEPARATE")
    container.ContentSequence = Sequence([nested])
    ds.ContentSequence = Sequence(
        [
            _content_item("TEXT", TextValue=f"Mass in {MARKER}'s left lung"),
            _content_item("PNAME", PersonName=f"{MARKER}^READER"),
            _content_item("DATE", Date=MARKER_DATE),
            _content_item("DATETIME", DateTime=MARKER_DATE + "101112"),
            container,
        ]
    )
    return ds


def _assert_dummy_content(ds: Dataset) -> None:
    assert len(ds.ContentSequence) == 1
    item = ds.ContentSequence[0]
    assert item.ValueType == "TEXT"
    assert item.TextValue == "ANONYMIZED"
    assert "ContentSequence" not in item


def test_sr_content_replaced_by_dummy() -> None:
    result, out = _round_trip(_sr_with_identity(), Deidentifier(key=KEY))
    _assert_no_marker(out)
    _assert_dummy_content(result)


def test_sr_content_replaced_with_options() -> None:
    options = ProfileOptions(
        retain_uids=True,
        dates=DateHandling.RETAIN,
        retain_patient_characteristics=True,
        retain_device_identity=True,
    )
    result, out = _round_trip(_sr_with_identity(), Deidentifier(options, KEY))
    assert MARKER.encode() not in out
    _assert_dummy_content(result)


def test_nested_content_sequence_replaced() -> None:
    ds = _instance()
    carrier = Dataset()
    carrier.ContentSequence = Sequence([_content_item("TEXT", TextValue=MARKER)])
    ds.AnatomicRegionSequence = Sequence([carrier])
    result, out = _round_trip(ds, Deidentifier(key=KEY))
    _assert_no_marker(out)
    _assert_dummy_content(result.AnatomicRegionSequence[0])


def test_bundled_sr_text_removed() -> None:
    source = dcmread(bundled("test-SR.dcm"))
    texts = [elem.value for elem in source.iterall() if elem.keyword == "TextValue"]
    assert "Sample Text 2" in texts
    result, out = _round_trip(source, Deidentifier(key=KEY))
    assert b"Sample Text 2" not in out
    assert b"was detected" not in out
    _assert_dummy_content(result)


def test_marks_identity_removed() -> None:
    options = ProfileOptions(
        retain_uids=True,
        dates=DateHandling.SHIFT,
        retain_patient_characteristics=True,
        retain_device_identity=True,
    )
    ds, _ = _round_trip(_instance(), Deidentifier(options, KEY))
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110", "113107", "113108", "113109"]
    assert all(
        item.CodingSchemeDesignator == "DCM" for item in ds.DeidentificationMethodCodeSequence
    )
    assert "Retain UIDs Option" in ds.DeidentificationMethod
    assert all(len(value) <= 64 for value in ds.DeidentificationMethod)
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_uid_remap_consistent_across_instances() -> None:
    study, series = generate_uid(), generate_uid()
    first = _instance()
    first.StudyInstanceUID, first.SeriesInstanceUID = study, series
    second = _instance()
    second.StudyInstanceUID, second.SeriesInstanceUID = study, series
    reference = Dataset()
    reference.ReferencedSOPClassUID = first.SOPClassUID
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    source = Dataset()
    source.ReferencedSOPInstanceUID = first.SOPInstanceUID
    deeper = Dataset()
    deeper.SourceImageSequence = Sequence([source])
    second.ReferencedImageSequence = Sequence([reference])
    second.AnatomicRegionSequence = Sequence([deeper])

    deidentifier = Deidentifier(key=KEY)
    new_first, _ = _round_trip(first, deidentifier)
    new_second, _ = _round_trip(second, deidentifier)
    assert new_first.StudyInstanceUID == new_second.StudyInstanceUID
    assert new_first.SeriesInstanceUID == new_second.SeriesInstanceUID
    assert new_first.StudyInstanceUID != study
    assert (
        new_second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_first.SOPInstanceUID
    )
    nested = new_second.AnatomicRegionSequence[0].SourceImageSequence[0]
    assert nested.ReferencedSOPInstanceUID == new_first.SOPInstanceUID
    assert new_second.ReferencedImageSequence[0].ReferencedSOPClassUID == first.SOPClassUID
    assert new_first.file_meta.MediaStorageSOPInstanceUID == new_first.SOPInstanceUID


def test_uid_remap_repeats_with_same_key() -> None:
    uid = generate_uid()
    assert Deidentifier(key=KEY).replace_uid(uid) == Deidentifier(key=KEY).replace_uid(uid)
    assert Deidentifier(key=KEY).replace_uid(uid) != Deidentifier(key=KEY[::-1]).replace_uid(uid)
    assert Deidentifier().replace_uid(uid) != Deidentifier().replace_uid(uid)


@given(st.text(alphabet="0123456789.", min_size=1, max_size=64))
def test_replaced_uid_is_conformant(uid: str) -> None:
    new = Deidentifier(key=KEY).replace_uid(uid)
    assert len(new) <= 64
    assert new.startswith("2.25.")
    assert all(part == "0" or not part.startswith("0") for part in new.split("."))


def test_retain_uids_keeps_uids() -> None:
    ds = _instance()
    original = ds.SOPInstanceUID
    result, _ = _round_trip(ds, Deidentifier(ProfileOptions(retain_uids=True), KEY))
    assert result.SOPInstanceUID == original


def _study_date(ds: Dataset) -> datetime.date:
    return datetime.datetime.strptime(ds.StudyDate, "%Y%m%d").date()


def test_date_shift_consistent_within_patient() -> None:
    deidentifier = Deidentifier(ProfileOptions(dates=DateHandling.SHIFT), KEY)
    shifts = []
    for date in ("20200101", "20210615"):
        ds = _instance()
        ds.StudyDate = date
        ds.StudyTime = "101500"
        ds.AcquisitionDateTime = date + "101500.5+0100"
        reference = Dataset()
        reference.ContentDate = date
        ds.AnatomicRegionSequence = Sequence([reference])
        result, _ = _round_trip(ds, deidentifier)
        original = datetime.datetime.strptime(date, "%Y%m%d").date()
        shift = (_study_date(result) - original).days
        shifts.append(shift)
        assert result.StudyTime == "101500"
        assert result.AcquisitionDateTime == result.StudyDate + "101500.5+0100"
        assert result.AnatomicRegionSequence[0].ContentDate == result.StudyDate
        assert "PatientBirthDate" not in result or not result.PatientBirthDate
    assert shifts[0] == shifts[1] == deidentifier.date_shift_days("PAT-1")
    assert -3650 <= shifts[0] <= -1
    other = [deidentifier.date_shift_days(f"PAT-{n}") for n in range(2, 12)]
    assert len(set(other)) > 1


def test_retain_full_dates_keeps_dates() -> None:
    ds = _instance()
    ds.StudyDate = "20200101"
    ds.PatientBirthDate = "19700101"
    ds.PatientBirthTime = "0830"
    result, _ = _round_trip(ds, Deidentifier(ProfileOptions(dates=DateHandling.RETAIN), KEY))
    assert result.StudyDate == "20200101"
    assert not result.get("PatientBirthDate")
    assert "PatientBirthTime" not in result
    assert result.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_basic_profile_empties_dates() -> None:
    ds = _instance()
    ds.StudyDate = "20200101"
    result, _ = _round_trip(ds, Deidentifier(key=KEY))
    assert not result.StudyDate
    assert result.LongitudinalTemporalInformationModified == "REMOVED"


def test_retain_patient_characteristics() -> None:
    ds = _instance()
    ds.PatientSex = "F"
    ds.PatientAge = "042Y"
    ds.PatientWeight = "61.5"
    kept, _ = _round_trip(
        ds, Deidentifier(ProfileOptions(retain_patient_characteristics=True), KEY)
    )
    removed, _ = _round_trip(ds, Deidentifier(key=KEY))
    assert (kept.PatientSex, kept.PatientAge, kept.PatientWeight) == ("F", "042Y", 61.5)
    assert not removed.get("PatientSex")
    assert "PatientAge" not in removed
    assert "PatientWeight" not in removed


def test_retain_device_identity() -> None:
    ds = _instance()
    ds.DeviceSerialNumber = "SN-778"
    ds.StationName = "CT-EAST-2"
    kept, _ = _round_trip(ds, Deidentifier(ProfileOptions(retain_device_identity=True), KEY))
    removed, _ = _round_trip(ds, Deidentifier(key=KEY))
    assert kept.DeviceSerialNumber == "SN-778"
    assert kept.StationName == "CT-EAST-2"
    assert not removed.get("DeviceSerialNumber")
    assert not removed.get("StationName")


def test_patient_pseudonym_shared_by_studies() -> None:
    deidentifier = Deidentifier(key=KEY)
    first, _ = _round_trip(_instance(), deidentifier)
    second, _ = _round_trip(_instance(), deidentifier)
    other, _ = _round_trip(_instance(patient_id="PAT-2"), deidentifier)
    assert first.PatientID == second.PatientID == first.PatientName
    assert first.PatientID != other.PatientID
    assert "PAT-1" not in first.PatientID


def test_pixel_data_untouched() -> None:
    for name in ("CT_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"):
        raw = bundled(name).read_bytes()
        before = dcmread(io.BytesIO(raw))
        after = dcmread(io.BytesIO(Deidentifier(key=KEY).deidentify_part10(raw)))
        assert after.PixelData == before.PixelData, name
        assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID, name


def test_burned_in_annotation_rejected() -> None:
    ds = _instance()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationError, match="Burned In Annotation"):
        _round_trip(ds, Deidentifier(key=KEY))


def test_not_dicom_rejected() -> None:
    with pytest.raises(DeidentificationError, match="not a readable DICOM"):
        Deidentifier(key=KEY).deidentify_part10(b"plain text, not DICOM")


def test_missing_transfer_syntax_rejected() -> None:
    raw = bundled("meta_missing_tsyntax.dcm").read_bytes()
    with pytest.raises(DeidentificationError, match=r"no Transfer Syntax UID \(0002,0010\)"):
        Deidentifier(key=KEY).deidentify_part10(raw)


def test_short_key_rejected() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Deidentifier(key=b"short")


def _readable(path_bytes: bytes) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(path_bytes))
            ds.get("SOPInstanceUID")
    except (InvalidDicomError, ValueError, TypeError, EOFError, OSError, NotImplementedError):
        return None
    return ds


@pytest.mark.parametrize("path", all_bundled(), ids=lambda p: p.name)
def test_bundled_file_deidentified_or_rejected(path) -> None:
    raw = path.read_bytes()
    before = _readable(raw)
    if before is None:
        pytest.skip("pydicom cannot read it as a Part 10 file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = Deidentifier(key=KEY).deidentify_part10(raw)
        except DeidentificationError as exc:
            assert str(exc)
            return
        after = dcmread(io.BytesIO(out))
        assert after.PatientIdentityRemoved == "YES"
        assert not any(elem.tag.is_private for elem in after.iterall())
        if "PatientName" in before and before.PatientName:
            assert after.PatientName != before.PatientName
        if "PixelData" in before:
            assert after.PixelData == before.PixelData


IDENTIFYING = [
    (tag, vr) for tag, vr, action in TABLE if vr in STRING_VRS and action is not Action.KEEP
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.lists(
        st.tuples(st.sampled_from(CARRIER_SEQUENCES), st.integers(0, 2), st.booleans()),
        min_size=0,
        max_size=5,
    ),
    attribute=st.sampled_from(IDENTIFYING),
)
def test_identity_removed_at_any_depth(
    path: list[tuple[str, int, bool]], attribute: tuple[int, str]
) -> None:
    ds = _instance()
    level = ds
    for keyword, position, private in path:
        items = [Dataset() for _ in range(position + 1)]
        if private:
            block = level.private_block(0x0041, "NESTING", create=True)
            block.add_new(0x01, "SQ", Sequence(items))
        else:
            setattr(level, keyword, Sequence(items))
        level = items[position]
    tag, vr = attribute
    level[tag] = DataElement(tag, vr, _marker(tag, vr))
    _, out = _round_trip(ds, Deidentifier(key=KEY))
    _assert_no_marker(out)
