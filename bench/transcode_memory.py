"""Peak memory and time of transcoding one large multi-frame instance, as WADO-RS does.

Builds a synthetic 16-bit MONOCHROME2 instance of 100 frames of 512x512 (52 MB of Pixel
Data) in Explicit VR Little Endian and RLE Lossless. Each case runs ``cirrus.dicom.transcode``
in a fresh child process and reports the time, the peak of Python allocations (tracemalloc,
which counts numpy's buffers but not a codec library's own) and the growth of the peak resident
set size over the input bytes alone (ru_maxrss, which counts everything).

    .venv/bin/python bench/transcode_memory.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless, generate_uid

FRAMES = 100
SIDE = 512
CASES = [
    ("explicit", "1.2.840.10008.1.2.5"),
    ("rle", "1.2.840.10008.1.2.1"),
    ("explicit", "1.2.840.10008.1.2.4.80"),
    ("explicit", "1.2.840.10008.1.2"),
]


def synthetic_instance() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = SIDE
    ds.NumberOfFrames = FRAMES
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(7)
    ramp = np.add.outer(np.arange(SIDE), np.arange(SIDE)).astype(np.uint16) * 4
    frames = [
        (ramp + rng.integers(0, 16, ramp.shape, dtype=np.uint16)) % 4096 for _ in range(FRAMES)
    ]
    ds.PixelData = np.stack(frames).astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def write(ds: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def measure(path: Path, target: str) -> None:
    """Run in the child: transcode the file at ``path`` once and print the measurements."""
    from cirrus.dicom.transcode import transcode

    data = path.read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    output = transcode(data, UID(target))
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{len(data)} {len(output)} {seconds:.2f} {peak} {(after - before) * 1024}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        measure(Path(sys.argv[2]), sys.argv[3])
        return
    ds = synthetic_instance()
    with tempfile.TemporaryDirectory() as folder:
        paths = {"explicit": Path(folder, "explicit.dcm"), "rle": Path(folder, "rle.dcm")}
        paths["explicit"].write_bytes(write(ds))
        ds.compress(RLELossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        paths["rle"].write_bytes(write(ds))
        print(
            "| source | target | input MB | output MB | s | tracemalloc peak MB | RSS growth MB |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for source, target in CASES:
            result = subprocess.run(
                [sys.executable, __file__, "--child", str(paths[source]), target],
                capture_output=True,
                text=True,
                check=True,
            )
            size, out, seconds, peak, growth = result.stdout.split()
            mb = 1024 * 1024
            print(
                f"| {source} | {target} | {int(size) / mb:.1f} | {int(out) / mb:.1f} | {seconds} "
                f"| {int(peak) / mb:.0f} | {int(growth) / mb:.0f} |"
            )


if __name__ == "__main__":
    main()
