"""The DICOM JSON model (PS3.18 Annex F) of stored instances, with bulk data by reference.

Stored metadata carries relative bulk data references of the form ``bulkdata/{path}``, where
the path is the tag of each element from the top level down, with item indexes between them
(``7FE00010``, ``00282000``, ``00880200/0/7FE00010``). ``absolute_bulkdata_uris`` turns them into
the URIs of one request's base URL when metadata is served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from cirrus.config import BULK_DATA_THRESHOLD
from cirrus.dicom.instance import InstanceHeader
from cirrus.errors import NotFoundError

if TYPE_CHECKING:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

BULKDATA_PREFIX: Final = "bulkdata/"
JsonDict = dict[str, Any]


def instance_metadata(header: InstanceHeader) -> JsonDict:
    """Return the DICOM JSON of an instance header, Pixel Data as a bulk data reference."""
    metadata = dataset_to_json(header.dataset, path=())
    if header.pixel_data is not None:
        metadata["7FE00010"] = {
            "vr": header.pixel_data.vr,
            "BulkDataURI": bulkdata_ref(("7FE00010",)),
        }
    return dict(sorted(metadata.items()))


def dataset_to_json(ds: Dataset, path: tuple[str, ...]) -> JsonDict:
    """Convert ``ds`` as pydicom's ``to_json_dict`` does, giving each bulk element its path.

    An element pydicom cannot convert (an invalid value in a non-conformant file) is left out
    with a warning that names its tag. The stored object keeps it unchanged.
    """
    from pydicom.errors import BytesLengthException

    result: JsonDict = {}
    # Each element is read inside the try, because pydicom decodes it on first access. It
    # raises NotImplementedError for an unknown VR such as "UM", and BytesLengthException
    # for a value whose length is no multiple of the VR's value size.
    for tag in sorted(ds.keys()):
        key = f"{tag:08X}"
        try:
            result[key] = _element_to_json(ds[tag], (*path, key))
        except (
            ValueError,
            TypeError,
            OverflowError,
            UnicodeError,
            NotImplementedError,
            BytesLengthException,
        ) as exc:
            logger.warning(
                "element left out of metadata",
                extra={"tag": key, "reason": type(exc).__name__},
            )
    return result


def _element_to_json(elem: DataElement, path: tuple[str, ...]) -> JsonDict:
    if elem.VR == "SQ":
        items = [
            dataset_to_json(item, (*path, str(index))) for index, item in enumerate(elem.value)
        ]
        return {"vr": "SQ", "Value": items}
    handler: Callable[[DataElement], str] = lambda _elem: bulkdata_ref(path)  # noqa: E731
    return elem.to_json_dict(handler, BULK_DATA_THRESHOLD)


def bulkdata_ref(path: tuple[str, ...]) -> str:
    return BULKDATA_PREFIX + "/".join(path)


def absolute_bulkdata_uris(metadata: JsonDict, instance_url: str) -> JsonDict:
    """Return ``metadata`` with each relative bulk data reference made absolute, in place."""
    for attribute in metadata.values():
        uri = attribute.get("BulkDataURI")
        if uri is not None and uri.startswith(BULKDATA_PREFIX):
            attribute["BulkDataURI"] = f"{instance_url}/{uri}"
        elif attribute.get("vr") == "SQ":
            for item in attribute.get("Value", ()):
                absolute_bulkdata_uris(item, instance_url)
    return metadata


def find_bulk_element(ds: Dataset, path: str) -> DataElement:
    """Return the element at a bulk data path of ``ds``, or raise ``NotFoundError``."""
    from pydicom.tag import Tag

    parts = path.strip("/").split("/")
    if len(parts) % 2 == 0:
        raise NotFoundError(f"bulk data path {path!r} must end with a tag")
    current = ds
    try:
        for index in range(0, len(parts) - 1, 2):
            current = current[Tag(int(parts[index], 16))].value[int(parts[index + 1])]
        return current[Tag(int(parts[-1], 16))]
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise NotFoundError(f"no bulk data element at path {path!r}") from exc
