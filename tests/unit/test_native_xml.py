"""DICOM JSON to the PS3.19 Native DICOM Model: values, sequences, person names and binaries."""

from __future__ import annotations

from xml.etree import ElementTree

from cirrus.dicomweb.native_xml import NATIVE_DICOM_NAMESPACE, to_native_xml

NS = {"d": NATIVE_DICOM_NAMESPACE}


def parse(dataset: dict[str, object]) -> ElementTree.Element:
    body = to_native_xml(dataset)
    assert body.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    return ElementTree.fromstring(body)


def test_values_numbered_with_keyword() -> None:
    root = parse({"00080060": {"vr": "CS", "Value": ["CT", "PT"]}, "00280010": {"vr": "US"}})

    modality, rows = root.findall("d:DicomAttribute", NS)
    assert modality.attrib == {"tag": "00080060", "vr": "CS", "keyword": "Modality"}
    values = modality.findall("d:Value", NS)
    assert [(value.get("number"), value.text) for value in values] == [("1", "CT"), ("2", "PT")]
    assert rows.attrib["keyword"] == "Rows"
    assert list(rows) == []


def test_sequence_items_nested() -> None:
    root = parse(
        {
            "00081199": {
                "vr": "SQ",
                "Value": [
                    {"00081155": {"vr": "UI", "Value": ["1.2.3"]}},
                    {"00081155": {"vr": "UI", "Value": ["1.2.4"]}},
                ],
            }
        }
    )

    items = root.findall("d:DicomAttribute/d:Item", NS)
    assert [item.get("number") for item in items] == ["1", "2"]
    uids = [item.findtext("d:DicomAttribute/d:Value", namespaces=NS) for item in items]
    assert uids == ["1.2.3", "1.2.4"]


def test_person_name_components() -> None:
    name = {"Alphabetic": "Doe^Jane^^Dr", "Ideographic": "山田^太郎"}
    root = parse({"00100010": {"vr": "PN", "Value": [name]}})

    person = root.find("d:DicomAttribute/d:PersonName", NS)
    assert person is not None
    assert person.get("number") == "1"
    assert person.findtext("d:Alphabetic/d:FamilyName", namespaces=NS) == "Doe"
    assert person.findtext("d:Alphabetic/d:GivenName", namespaces=NS) == "Jane"
    assert person.find("d:Alphabetic/d:MiddleName", NS) is None
    assert person.findtext("d:Alphabetic/d:NamePrefix", namespaces=NS) == "Dr"
    assert person.findtext("d:Ideographic/d:FamilyName", namespaces=NS) == "山田"
    assert person.find("d:Phonetic", NS) is None


def test_binary_values() -> None:
    root = parse(
        {
            "00091010": {"vr": "OB", "InlineBinary": "AAEC"},
            "7FE00010": {"vr": "OW", "BulkDataURI": "https://host/bulkdata/7FE00010"},
        }
    )

    private, pixels = root.findall("d:DicomAttribute", NS)
    assert "keyword" not in private.attrib
    assert private.findtext("d:InlineBinary", namespaces=NS) == "AAEC"
    bulk = pixels.find("d:BulkData", NS)
    assert bulk is not None
    assert bulk.get("uri") == "https://host/bulkdata/7FE00010"
