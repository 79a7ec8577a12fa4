"""Transfer syntax UIDs (PS3.5 10 and A.4) as plain strings, for modules that avoid pydicom.

Importing any pydicom module imports the whole package, and pydicom 3.0.2 then imports numpy
and every installed pixel data plugin. The modules that the Lambda handlers import at start
compare transfer syntaxes with these constants and import pydicom only in the functions that
read, write or transcode a data set.

pydicom's ``UID`` is a ``str`` subclass that keeps the equality and hash of ``str``, so a
``UID`` and the string of the same value are equal and find each other in sets and dicts.
Code that needs the properties of a ``UID`` (``is_compressed``, ``name``) wraps the string.
"""

from __future__ import annotations

from typing import Final

IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"
JPEG_LS_LOSSLESS: Final = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS: Final = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS: Final = "1.2.840.10008.1.2.4.90"
RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"
