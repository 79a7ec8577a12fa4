"""``cirrus export --to``: a study's archived instances as a DICOM File-set with a DICOMDIR.

The File-set (PS3.10 section 8) is built with pydicom's ``FileSet``, which names the files
(``PT000000/ST000000/SE000000/IM000000``) and writes the DICOMDIR with a PATIENT, STUDY, SERIES
and IMAGE (or other) record per instance. pydicom stages each instance by writing it again.
The staged file is then replaced by the archived bytes, so every exported file is the archived
object byte for byte, or the de-identified object that ``cirrus.deid`` wrote.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet

from cirrus.deid import DeidentificationError, Deidentifier
from cirrus.errors import InvalidInstanceError, NotFoundError
from cirrus.storage.keys import InstanceKey, check_uid, site_prefix
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

EXPORTED: Final = "exported"
FAILED: Final = "failed"
# A File-set ID is CS, at most 16 characters (PS3.3 F.2.2.1).
_FILE_SET_ID: Final = "CIRRUS"
_RECORD_DUMMIES: Final = {
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "1",
    "Modality": "OT",
    "SeriesNumber": 1,
    # The records of SR, key object, raw data and other non-image instances need both.
    "ContentDate": "19000101",
    "ContentTime": "000000",
}


class ExportError(Exception):
    """The export cannot run at all: the study is missing, or the destination is unusable."""


@dataclass(frozen=True)
class InstanceResult:
    """The outcome for one archived instance: its key, result and a detail."""

    object_key: str
    result: str
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {"object_key": self.object_key, "result": self.result, "detail": self.detail}
        )


Report = Callable[[InstanceResult], None]


def study_keys(store: ObjectStore, site: str, study_uid: str) -> list[str]:
    """Return the object keys of the instances of ``study_uid`` in ``site``, in key order.

    Raises ``ExportError`` when the study UID is invalid or the site has no such study.
    """
    try:
        check_uid("StudyInstanceUID", study_uid)
    except InvalidInstanceError as exc:
        # The archive also keeps UIDs with letters, '-' and '_' that senders wrote, but a
        # conformant UID (PS3.5 9.1) has only digits and '.', which is what to tell the user.
        raise ExportError(
            f"{study_uid[:80]!r} is not a valid StudyInstanceUID (0020,000D); give at most 64 "
            "digits and '.', such as 1.2.840.113619.2.55.3.2831"
        ) from exc
    prefix = f"{site_prefix(site)}studies/{study_uid}/"
    keys = []
    for stored in store.list_keys(prefix):
        try:
            InstanceKey.parse(stored.key)
        except ValueError:
            continue
        keys.append(stored.key)
    if not keys:
        raise ExportError(f"study {study_uid} not found in site {site!r}")
    return keys


def read_instances(
    store: ObjectStore, keys: list[str], deidentifier: Deidentifier | None
) -> Iterator[tuple[str, bytes | InstanceResult]]:
    """Yield each key with its archived bytes, de-identified with ``deidentifier`` if given.

    An instance that was deleted since it was listed, or cannot be de-identified, comes with
    its failed ``InstanceResult`` instead.
    """
    for key in keys:
        try:
            # NOTE: each instance is read into memory whole, so a 2 GB object needs 2 GB.
            part10 = store.get(key)
        except NotFoundError:
            yield key, InstanceResult(key, FAILED, "deleted while the export ran")
            continue
        if deidentifier is None:
            yield key, part10
            continue
        try:
            yield key, deidentifier.deidentify_part10(part10)
        except DeidentificationError as exc:
            logger.warning(
                "instance not de-identified", extra={"object_key": key, "error": str(exc)}
            )
            yield key, InstanceResult(key, FAILED, f"not de-identified: {exc}")


def export_file_set(
    store: ObjectStore,
    site: str,
    study_uid: str,
    destination: Path,
    deidentifier: Deidentifier | None,
    report: Report,
) -> dict[str, int]:
    """Write the study as a File-set into the folder or ``.zip`` file ``destination``.

    The destination must not exist, or be an empty folder. A ZIP file is written under a
    temporary name and renamed when complete. Returns the count of each result.
    """
    as_zip = destination.suffix.lower() == ".zip"
    _check_destination(destination, as_zip)
    keys = study_keys(store, site, study_uid)
    counts = {EXPORTED: 0, FAILED: 0}
    with tempfile.TemporaryDirectory(prefix="cirrus-export-") as scratch:
        root = destination if not as_zip else Path(scratch) / "fileset"
        # NOTE: FileSet.add compares each instance with every one added before it, so building
        # the DICOMDIR takes time that grows with the square of the study's instance count.
        file_set = FileSet()
        file_set.ID = _FILE_SET_ID
        for key, part10 in read_instances(store, keys, deidentifier):
            result = _add_instance(file_set, key, part10)
            counts[result.result] += 1
            report(result)
        if counts[EXPORTED]:
            root.mkdir(parents=True, exist_ok=True)
            file_set.write(root)
            if as_zip:
                _zip_folder(root, destination)
    return counts


def _check_destination(destination: Path, as_zip: bool) -> None:
    if as_zip:
        if destination.exists():
            raise ExportError(f"{destination} exists; give a new file name")
        if not destination.parent.is_dir():
            raise ExportError(f"folder {destination.parent} does not exist")
        _check_writable(destination.parent)
        return
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise ExportError(f"{destination} exists and is not an empty folder")
    existing = destination
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    _check_writable(existing)


def _check_writable(folder: Path) -> None:
    """Raise ``ExportError`` unless a file can be created in ``folder``.

    Creating a file is the only reliable test: ``os.access`` passes for root, and file systems
    such as /proc reject files that the permission bits would allow.
    """
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cirrus-export-check-"):
            pass
    except OSError as exc:
        raise ExportError(
            f"cannot write in folder {folder}: {exc.strerror or exc}; give a writable destination"
        ) from exc


def _add_instance(file_set: FileSet, key: str, part10: bytes | InstanceResult) -> InstanceResult:
    """Stage one instance in ``file_set`` and replace the staged copy with ``part10``."""
    if isinstance(part10, InstanceResult):
        return part10
    try:
        ds = dcmread(io.BytesIO(part10), stop_before_pixels=True)
        _invent_record_values(ds, len(file_set) + 1)
        instance = file_set.add(ds)
    except (InvalidDicomError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # pydicom raises ValueError for an instance that a DICOMDIR record cannot describe,
        # such as one without Patient ID or of a SOP class without a record type.
        return InstanceResult(key, FAILED, f"not added to the File-set: {exc}")
    Path(instance.path).write_bytes(part10)
    return InstanceResult(key, EXPORTED, instance.FileID)


def _invent_record_values(ds: Dataset, number: int) -> None:
    """Fill the empty Type 1 attributes that the DICOMDIR records need, in ``ds`` only.

    The records of PS3.3 F.5 require a Patient ID, Study Date, Study Time, Study ID, Modality,
    Series Number, Instance Number, and for most non-image records a Content Date and Content
    Time, that an instance may leave empty (de-identified ones do). As dcmmkdir does with
    ``--invent``, the records get dummy values, and the instance file, written from the
    archived bytes, is unchanged.
    """
    for keyword, value in _RECORD_DUMMIES.items():
        if not ds.get(keyword):
            setattr(ds, keyword, value)
    if ds.get("InstanceNumber") in (None, ""):
        ds.InstanceNumber = number


def _zip_folder(root: Path, destination: Path) -> None:
    partial = destination.with_name(destination.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(root).as_posix())
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
