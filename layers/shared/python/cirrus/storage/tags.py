"""Object tags that the write path sets on each archived instance, in the same PUT.

S3 lifecycle rules filter on them (``cirrus.lifecycle.rules``), so each instance is tiered by
its site and modality. A tag value contains no patient data: the site name and the Modality
(0008,0060) code only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

from cirrus.dicom.instance import DECODING_ERRORS

if TYPE_CHECKING:
    from pydicom import Dataset

SITE_TAG: Final = "site"
MODALITY_TAG: Final = "modality"
# The characters that S3 takes in a tag value; a Modality outside them is not tagged.
_TAG_VALUE: Final = re.compile(r"[A-Za-z0-9 +\-=._:/@]{1,256}")


def instance_tags(site: str, ds: Dataset) -> dict[str, str]:
    """Return the tags of an instance of ``site``: its site, and its Modality when it has one."""
    from pydicom.errors import BytesLengthException

    tags = {SITE_TAG: site}
    try:
        modality = str(ds.get("Modality", "") or "").strip()
    except (*DECODING_ERRORS, BytesLengthException):
        # A Modality that pydicom cannot decode (a wrong VR or length) is not tagged.
        modality = ""
    if modality and _TAG_VALUE.fullmatch(modality):
        tags[MODALITY_TAG] = modality
    return tags


def tagging_header(tags: Mapping[str, str]) -> str:
    """Return the ``x-amz-tagging`` value of ``tags``: a URL-encoded query string."""
    return urlencode(sorted(tags.items()))
