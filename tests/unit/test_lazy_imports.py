"""The Lambda handlers import pydicom, numpy and the codecs on first use, not at import.

pydicom 3.0.2 imports numpy and every installed pixel data plugin when it is imported, so a
handler module that imported pydicom would pay for all of them at each cold start, the pixel
function most. Each check imports a handler in a fresh interpreter of this environment, where
numpy and the codecs are installed, and lists the heavy packages that the import loaded.

The DICOMweb handler also leaves out the modules of the routes that only some requests use,
the Services adapters that only the ingest and StudyStable functions build, and sqlite3, which
the X-Ray SDK would import to patch it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom.uid
import pytest
from pydicom.datadict import tag_for_keyword

from cirrus.dicom import uids
from cirrus.index import attributes

REPO = Path(__file__).resolve().parents[2]
HEAVY_PACKAGES = ("pydicom", "numpy", "PIL", "gdcm", "pylibjpeg", "openjpeg", "jpeg_ls")
HANDLERS = (
    "functions.dicomweb.handler",
    "functions.ingest.handler",
    "functions.stable.handler",
    "functions.retention.handler",
)


# Modules that the DICOMweb handler imports on first use: those of the STOW-RS, upload,
# frames, rendered and DELETE routes, the index writer and the StudyStable adapters.
DICOMWEB_DEFERRED = (
    "cirrus.dicomweb.stow",
    "cirrus.dicomweb.uploads",
    "cirrus.dicomweb.frames",
    "cirrus.dicomweb.rendered",
    "cirrus.dicomweb.rendered_group",
    "cirrus.dicomweb.delete",
    "cirrus.index.writer",
    "cirrus.events.stable",
)


def loaded_after_import(
    module: str,
    names: tuple[str, ...] = HEAVY_PACKAGES,
    extra_environment: dict[str, str] | None = None,
) -> list[str]:
    """Import ``module`` in a new interpreter and return those of ``names`` that it loaded."""
    pytest.importorskip("numpy")
    probe = (
        f"import json, sys, {module}\n"
        f"print(json.dumps(sorted(name for name in {names!r} if name in sys.modules)))\n"
    )
    path = [str(REPO), str(REPO / "layers" / "shared" / "python")]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]),
        **(extra_environment or {}),
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize("module", HANDLERS)
def test_handler_import_skips_pydicom(module: str) -> None:
    assert loaded_after_import(module) == []


def test_transcode_import_skips_pydicom() -> None:
    assert loaded_after_import("cirrus.dicom.transcode") == []


def test_dicomweb_import_skips_route_modules() -> None:
    assert loaded_after_import("functions.dicomweb.handler", DICOMWEB_DEFERRED) == []


def test_dicomweb_tracer_skips_sqlite3() -> None:
    # The Tracer patches libraries only where it runs as a Lambda function.
    lambda_environment = {
        "LAMBDA_TASK_ROOT": str(REPO),
        "AWS_LAMBDA_FUNCTION_NAME": "lazy-imports-test",
        "POWERTOOLS_TRACE_DISABLED": "false",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    }
    loaded = loaded_after_import(
        "functions.dicomweb.handler",
        ("sqlite3", "aws_xray_sdk.ext.botocore.patch", "aws_xray_sdk.ext.pynamodb.patch"),
        lambda_environment,
    )
    assert "sqlite3" not in loaded
    assert "aws_xray_sdk.ext.botocore.patch" in loaded
    assert "aws_xray_sdk.ext.pynamodb.patch" in loaded


@pytest.mark.parametrize(
    ("constant", "pydicom_name"),
    [
        ("IMPLICIT_VR_LITTLE_ENDIAN", "ImplicitVRLittleEndian"),
        ("EXPLICIT_VR_LITTLE_ENDIAN", "ExplicitVRLittleEndian"),
        ("DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN", "DeflatedExplicitVRLittleEndian"),
        ("EXPLICIT_VR_BIG_ENDIAN", "ExplicitVRBigEndian"),
        ("JPEG_LS_LOSSLESS", "JPEGLSLossless"),
        ("JPEG_LS_NEAR_LOSSLESS", "JPEGLSNearLossless"),
        ("JPEG_2000_LOSSLESS", "JPEG2000Lossless"),
        ("RLE_LOSSLESS", "RLELossless"),
    ],
)
def test_uid_constant_matches_pydicom(constant: str, pydicom_name: str) -> None:
    value = getattr(uids, constant)
    expected = getattr(pydicom.uid, pydicom_name)
    assert value == expected
    assert hash(value) == hash(expected)
    assert expected in {value}


def test_keyword_tags_match_dictionary() -> None:
    for keyword, tag in attributes._KEYWORD_TAGS.items():
        assert tag_for_keyword(keyword) == tag, keyword
