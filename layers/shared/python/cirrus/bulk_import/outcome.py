"""The outcome of importing one file or instance, as the summary and the report list it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Result(StrEnum):
    # Written to the archive for the first time.
    STORED = "stored"
    # Stored already under the same study, series and SOP Instance UIDs with other bytes, and
    # replaced, as C-STORE and STOW-RS replace an instance sent again.
    REPLACED = "replaced"
    # Stored already with the same bytes: nothing was written.
    DUPLICATE = "duplicate"
    # Not an instance that the archive takes; the reason says why.
    REJECTED = "rejected"
    # Not a DICOM instance at all (a text file, a DICOMDIR); counted, not imported.
    SKIPPED = "skipped"
    # The source failed to deliver a study or an instance.
    FAILED = "failed"


# Results that make ``cirrus import`` exit with status 1.
PROBLEMS = frozenset({Result.REJECTED, Result.FAILED})


@dataclass(frozen=True)
class Outcome:
    """What happened to one file, ZIP member, instance or study of the source.

    ``name`` is the file's path relative to the imported folder, the ZIP member's name, or the
    SOP Instance UID (or Study Instance UID for a study that failed) of a remote source. It never
    contains patient data unless the source's file names do.
    """

    name: str
    result: Result
    reason: str = ""
    size: int = 0
    object_key: str = ""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "result": self.result.value}
        if self.reason:
            document["reason"] = self.reason
        if self.size:
            document["size"] = self.size
        if self.object_key:
            document["object_key"] = self.object_key
        return document
