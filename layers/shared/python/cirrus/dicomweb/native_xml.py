"""DICOM JSON data sets as the Native DICOM Model XML of PS3.19 Annex A (application/dicom+xml).

Each attribute becomes a ``DicomAttribute`` with its tag, VR and keyword. Values are numbered
``Value`` elements, sequence items numbered ``Item`` elements, person names ``PersonName``
elements with their component groups, and binary values ``InlineBinary`` or ``BulkData``.
"""

from __future__ import annotations

from typing import Any, Final
from xml.etree import ElementTree

NATIVE_DICOM_NAMESPACE: Final = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
DICOM_XML_MEDIA_TYPE: Final = "application/dicom+xml"

JsonDict = dict[str, Any]

_NAME_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")
# PS3.5 6.2: the five components of a person name, in order, separated by '^'.
_NAME_COMPONENTS: Final = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def to_native_xml(dataset: JsonDict) -> bytes:
    """Encode a DICOM JSON data set as a UTF-8 ``NativeDicomModel`` document."""
    root = ElementTree.Element("NativeDicomModel", {"xmlns": NATIVE_DICOM_NAMESPACE})
    _add_attributes(root, dataset)
    body: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _add_attributes(parent: ElementTree.Element, dataset: JsonDict) -> None:
    from pydicom.datadict import keyword_for_tag

    for tag in sorted(dataset):
        attribute = dataset[tag]
        vr = str(attribute.get("vr", "UN"))
        fields = {"tag": tag.upper(), "vr": vr}
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            fields["keyword"] = keyword
        element = ElementTree.SubElement(parent, "DicomAttribute", fields)
        if "InlineBinary" in attribute:
            ElementTree.SubElement(element, "InlineBinary").text = attribute["InlineBinary"]
        elif "BulkDataURI" in attribute:
            ElementTree.SubElement(element, "BulkData", {"uri": attribute["BulkDataURI"]})
        for number, value in enumerate(attribute.get("Value", ()), start=1):
            _add_value(element, vr, number, value)


def _add_value(element: ElementTree.Element, vr: str, number: int, value: Any) -> None:
    if vr == "SQ":
        item = ElementTree.SubElement(element, "Item", {"number": str(number)})
        _add_attributes(item, value or {})
    elif vr == "PN":
        name = ElementTree.SubElement(element, "PersonName", {"number": str(number)})
        for group in _NAME_GROUPS:
            text = (value or {}).get(group)
            if text:
                _add_name_group(name, group, text)
    else:
        text = "" if value is None else str(value)
        ElementTree.SubElement(element, "Value", {"number": str(number)}).text = text


def _add_name_group(name: ElementTree.Element, group: str, text: str) -> None:
    group_element = ElementTree.SubElement(name, group)
    for component, part in zip(_NAME_COMPONENTS, text.split("^"), strict=False):
        if part:
            ElementTree.SubElement(group_element, component).text = part
