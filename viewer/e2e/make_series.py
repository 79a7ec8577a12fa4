"""Write the DICOM files of the viewer's end-to-end tests and benchmark, with known content.

``phantom`` writes a CT volume of a water phantom: air (-1000 HU) around a water cylinder
(0 HU) along the z axis, with two bone rods (1000 HU) inside it, 30 mm apart on the x axis.
Pixel spacing is 0.5 mm at 128 columns, scaled so that the field of view stays 64 mm at any
size, and slices are 1 mm apart, so that a measurement in the viewer has a known result.
``cine`` writes one multi-frame instance (Ultrasound Multi-frame, 8 bit) whose bright disk
moves from frame to frame. ``fixtures`` writes both at the test sizes and adds the pydicom
test files that the tests load. ``dated`` writes small one-image studies a day apart. Each
command prints a JSON list of the files written, with their UIDs and the storescu option of
their transfer syntax, for the caller to send.

    python viewer/e2e/make_series.py fixtures OUT_DIR
    python viewer/e2e/make_series.py phantom OUT_DIR --slices 500 --size 512
    python viewer/e2e/make_series.py dated OUT_DIR --count 31

UIDs derive from fixed seeds, so two runs write the same UIDs and the same pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

FIELD_OF_VIEW_MM = 64.0
WATER_RADIUS_MM = 25.0
ROD_RADIUS_MM = 2.5
ROD_OFFSET_MM = 15.0
SLICE_SPACING_MM = 1.0
AIR_HU, WATER_HU, BONE_HU = -1000, 0, 1000
RESCALE_INTERCEPT = -1024

# The pydicom test files that the tests load, with storescu's option for their transfer
# syntax: without one storescu proposes the uncompressed syntaxes only.
PYDICOM_FILES = {
    "CT_small.dcm": None,
    "MR_small.dcm": None,
    "examples_jpeg2k.dcm": "-xv",  # JPEG 2000 lossless, YBR_RCT, 640x480
    "SC_rgb_rle_2frame.dcm": "-xr",  # RLE lossless, RGB, 2 frames
}


@dataclass(frozen=True)
class WrittenFile:
    """One file to send, as the JSON output lists it."""

    path: str
    study: str
    series: str
    sop: str
    syntax_option: str | None


def uid(*seed: object) -> str:
    """Return a UID that depends only on ``seed``."""
    return str(generate_uid(entropy_srcs=["cirrus-viewer-e2e", *map(str, seed)]))


def phantom_slice(size: int) -> np.ndarray:
    """Return one axial slice of the phantom in HU, ``size`` x ``size``, as int16."""
    spacing = FIELD_OF_VIEW_MM / size
    # Pixel centres in mm from the image centre: x to the right, y down.
    centres = (np.arange(size) + 0.5) * spacing - FIELD_OF_VIEW_MM / 2
    x, y = np.meshgrid(centres, centres)
    hu = np.full((size, size), AIR_HU, dtype=np.int16)
    hu[x**2 + y**2 <= WATER_RADIUS_MM**2] = WATER_HU
    for rod_x in (-ROD_OFFSET_MM, ROD_OFFSET_MM):
        hu[(x - rod_x) ** 2 + y**2 <= ROD_RADIUS_MM**2] = BONE_HU
    return hu


def file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return meta


def patient_and_study(ds: Dataset, seed: str, name: str, patient_id: str, accession: str) -> None:
    ds.PatientName, ds.PatientID = name, patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID = uid(seed, "study")
    ds.StudyDate, ds.StudyTime = "20260102", "083000"
    ds.AccessionNumber, ds.StudyID = accession, "1"
    ds.ReferringPhysicianName = ""


def write_phantom(folder: Path, slices: int, size: int, seed: str = "phantom") -> list[WrittenFile]:
    """Write the phantom volume as ``slices`` CT instances of one series."""
    folder.mkdir(parents=True, exist_ok=True)
    spacing = FIELD_OF_VIEW_MM / size
    stored = (phantom_slice(size) - RESCALE_INTERCEPT).astype(np.uint16)
    # The cylinder ends 4 slices before each end of the volume, so that the sagittal and
    # coronal planes of MPR show its ends.
    air = np.full_like(stored, AIR_HU - RESCALE_INTERCEPT)
    series, frame = uid(seed, "series"), uid(seed, "frame")
    written = []
    for index in range(slices):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = uid(seed, "instance", index)
        patient_and_study(ds, seed, "PHANTOM^WATER", "E2E-CT-1", "E2ECT1")
        ds.StudyDescription = "Water phantom"
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series, frame
        ds.SeriesNumber, ds.SeriesDescription = 1, "Axial 1 mm"
        ds.Modality, ds.InstanceNumber = "CT", index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        corner = -FIELD_OF_VIEW_MM / 2 + spacing / 2
        z = index * SLICE_SPACING_MM
        ds.ImagePositionPatient = [corner, corner, z]
        ds.SliceLocation, ds.SliceThickness = z, SLICE_SPACING_MM
        ds.PixelSpacing = [spacing, spacing]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = RESCALE_INTERCEPT, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        inside = 4 <= index < slices - 4
        ds.PixelData = (stored if inside else air).tobytes()
        ds.file_meta = file_meta(ds)
        path = folder / f"phantom-{index + 1:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        written.append(WrittenFile(str(path), ds.StudyInstanceUID, series, ds.SOPInstanceUID, None))
    return written


def write_cine(folder: Path, frames: int = 12, size: int = 64) -> list[WrittenFile]:
    """Write one Ultrasound Multi-frame instance whose disk moves right by a step per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    seed = "cine"
    centres = np.arange(size) + 0.5
    x, y = np.meshgrid(centres, centres)
    pixels = np.zeros((frames, size, size), dtype=np.uint8)
    for index in range(frames):
        disk_x = size * (0.2 + 0.6 * index / max(frames - 1, 1))
        pixels[index][(x - disk_x) ** 2 + (y - size / 2) ** 2 <= (size / 8) ** 2] = 220

    ds = Dataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = uid(seed, "instance")
    patient_and_study(ds, seed, "CINE^LOOP", "E2E-US-1", "E2EUS1")
    ds.StudyDescription = "Moving disk"
    ds.SeriesInstanceUID = uid(seed, "series")
    ds.SeriesNumber, ds.SeriesDescription = 1, "Cine loop"
    ds.Modality, ds.InstanceNumber = "US", 1

    ds.NumberOfFrames = frames
    ds.FrameTime = 100.0
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta = file_meta(ds)
    path = folder / "cine.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return [
        WrittenFile(str(path), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, None)
    ]


def write_dated(folder: Path, count: int) -> list[WrittenFile]:
    """Write ``count`` one-image studies dated a day apart from 2001-01-01, with patient names
    DATED^001 and on in a shuffled order, so that neither name nor UID follows the date."""
    folder.mkdir(parents=True, exist_ok=True)
    first = date(2001, 1, 1)
    written = []
    for index in range(count):
        seed = f"dated-{index}"
        ds = Dataset()
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = uid(seed, "instance")
        # 7 is coprime to a count that is not a multiple of 7, so the names permute the indexes.
        name = f"DATED^{(index * 7) % count + 1:03d}"
        patient_and_study(ds, seed, name, f"E2E-DATED-{index + 1}", f"E2EDATED{index + 1}")
        ds.StudyDate = (first + timedelta(days=index)).strftime("%Y%m%d")
        ds.StudyDescription = "Dated study"
        ds.SeriesInstanceUID = uid(seed, "series")
        ds.SeriesNumber, ds.Modality, ds.InstanceNumber = 1, "OT", 1
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(64)
        ds.file_meta = file_meta(ds)
        path = folder / f"dated-{index + 1:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        written.append(
            WrittenFile(
                str(path), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, None
            )
        )
    return written


def pydicom_files() -> list[WrittenFile]:
    root = Path(pydicom.data.__file__).parent / "test_files"
    listed = []
    for name, option in PYDICOM_FILES.items():
        ds = pydicom.dcmread(root / name, stop_before_pixels=True)
        study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        listed.append(WrittenFile(str(root / name), study, series, sop, option))
    return listed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fixtures = commands.add_parser("fixtures", help="the files of the end-to-end tests")
    fixtures.add_argument("out", type=Path, help="folder to write to")
    phantom = commands.add_parser("phantom", help="the phantom CT volume only")
    phantom.add_argument("out", type=Path, help="folder to write to")
    phantom.add_argument("--slices", type=int, default=64, help="number of slices")
    phantom.add_argument("--size", type=int, default=128, help="rows and columns")
    phantom.add_argument("--seed", default="phantom", help="text that the UIDs derive from")
    dated = commands.add_parser("dated", help="small one-image studies a day apart")
    dated.add_argument("out", type=Path, help="folder to write to")
    dated.add_argument("--count", type=int, default=31, help="studies, not a multiple of 7")
    args = parser.parse_args()

    if args.command == "fixtures":
        written = write_phantom(args.out / "phantom", slices=64, size=128)
        written += write_cine(args.out / "cine")
        written += pydicom_files()
    elif args.command == "dated":
        if args.count < 1 or args.count % 7 == 0:
            parser.error("--count must be 1 or more and not a multiple of 7")
        written = write_dated(args.out, args.count)
    else:
        if args.size < 16 or args.slices < 9:
            parser.error("--size must be 16 or more and --slices 9 or more")
        written = write_phantom(args.out, args.slices, args.size, args.seed)
    json.dump([asdict(item) for item in written], sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
