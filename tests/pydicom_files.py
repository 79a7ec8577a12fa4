"""pydicom's bundled test files, read from its package folder so nothing is downloaded.

``pydicom.data.get_testdata_file`` fetches some names from the internet; these helpers only
look at the files installed with pydicom.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.data import DATA_ROOT

TEST_FILES = Path(DATA_ROOT) / "test_files"


def bundled(name: str) -> Path:
    path = TEST_FILES / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not among pydicom's bundled test files")
    return path


def all_bundled() -> list[Path]:
    return sorted(path for path in TEST_FILES.rglob("*") if path.is_file())
