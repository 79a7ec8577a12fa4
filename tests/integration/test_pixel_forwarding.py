"""The DICOMweb handler without pixel codecs forwards pixel work to a pixel function.

The handler under test runs in this process with ``CODECS_INSTALLED`` false, as in the DICOMweb
Lambda, behind the local HTTP adapter. The pixel function is the same handler in a child
process with the codecs, behind a Lambda Invoke endpoint on 127.0.0.1
(``tests.integration.lambda_invoke``) that boto3's Lambda client calls. Both share one moto
deployment. A separate check imports the handlers in an interpreter that cannot see numpy,
Pillow or the codec packages at all.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import boto3
import numpy as np
import pydicom
import pytest
import requests
from botocore.config import Config
from PIL import Image

from cirrus.config import ResourceNames, Settings
from cirrus.dicom import transcode
from cirrus.dicomweb.forwarding import PixelForwarder
from cirrus.local.http import serve_http
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.services import Services
from functions.dicomweb.handler import dicomweb_services, handle
from tests.integration.dicomweb_stack import Stack, encode, post_instances, read

REPO = Path(__file__).resolve().parents[2]
FILES = ("CT_small.dcm", "MR_small_RLE.dcm")
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG = "1.2.840.10008.1.2.4.50"


class PixelFunction:
    """The DICOMweb handler with codecs in a child process, behind a Lambda Invoke endpoint."""

    def __init__(self, environment: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.lambda_invoke",
                "functions.dicomweb.handler:lambda_handler",
            ],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.process.kill()
            raise RuntimeError(f"the invoke endpoint did not start: {line!r}")
        self.url = f"http://127.0.0.1:{line.strip()}"

    def forwarder(self) -> PixelForwarder:
        client = boto3.client(
            "lambda",
            endpoint_url=self.url,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}),
        )
        return PixelForwarder(client, "cirrus-pixels")

    @property
    def invocations(self) -> int:
        return int(requests.get(f"{self.url}/invocations", timeout=10).json()["invocations"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def lambda_environment(settings: Settings) -> dict[str, str]:
    environment = {**os.environ, **settings.to_env()}
    environment.pop("CIRRUS_PIXEL_FUNCTION", None)
    environment["AWS_LAMBDA_FUNCTION_NAME"] = "cirrus-pixels"
    return environment


@pytest.fixture(scope="module")
def settings(moto_server: MotoProcess) -> Settings:
    names = ResourceNames(deployment=f"px{uuid.uuid4().hex[:10]}")
    return create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))


@pytest.fixture(scope="module")
def pixels(settings: Settings) -> Iterator[PixelFunction]:
    function = PixelFunction(lambda_environment(settings))
    yield function
    function.stop()


@pytest.fixture(scope="module")
def stack(settings: Settings, pixels: PixelFunction) -> Iterator[Stack]:
    """The handler as the DICOMweb Lambda runs it: no codecs, a pixel function to forward to."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transcode, "CODECS_INSTALLED", False)
        services = Services(settings)
        view = dataclasses.replace(dicomweb_services(services), pixels=pixels.forwarder())
        server = serve_http(functools.partial(handle, services=view), "127.0.0.1", 0)
        running = Stack(f"http://127.0.0.1:{server.port}/dicomweb", server, services)
        response = post_instances(f"{running.url}/studies", [encode(read(name)) for name in FILES])
        assert response.status_code == 200, response.text
        running.index()
        yield running
        server.shutdown()


@pytest.fixture
def forwarded(pixels: PixelFunction) -> Iterator[list[int]]:
    """Yield a list that holds, after the test, how many requests the test forwarded."""
    before = pixels.invocations
    count: list[int] = []
    yield count
    count.append(pixels.invocations - before)


def uids(ds: pydicom.Dataset) -> tuple[str, str, str]:
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_codec_free_requests_stay_local(stack: Stack, pixels: PixelFunction) -> None:
    before = pixels.invocations
    ct = read("CT_small.dcm")
    client = stack.client

    found = client.search_for_instances(search_filters={"SOPInstanceUID": ct.SOPInstanceUID})
    metadata = client.retrieve_instance_metadata(*uids(ct))
    (frame,) = client.retrieve_instance_frames(*uids(ct), frame_numbers=[1])
    instance = client.retrieve_instance(*uids(ct), media_types=(("application/dicom", "*"),))

    assert [item["00080018"]["Value"] for item in found] == [[ct.SOPInstanceUID]]
    assert metadata["00080018"]["Value"] == [ct.SOPInstanceUID]
    assert frame == ct.PixelData
    assert instance.PixelData == ct.PixelData
    assert pixels.invocations == before


def test_decoding_retrieve_is_forwarded(stack: Stack, pixels: PixelFunction) -> None:
    before = pixels.invocations
    mr = read("MR_small_RLE.dcm")

    instance = stack.client.retrieve_instance(
        *uids(mr), media_types=(("application/dicom", EXPLICIT_LE),)
    )

    assert instance.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert np.array_equal(instance.pixel_array, mr.pixel_array)
    assert pixels.invocations == before + 1


def test_rendered_and_thumbnail_are_forwarded(stack: Stack, pixels: PixelFunction) -> None:
    before = pixels.invocations
    ct = read("CT_small.dcm")
    url = f"{stack.url}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
    url = f"{url}/instances/{ct.SOPInstanceUID}"

    rendered = stack.client.retrieve_instance_rendered(*uids(ct), media_types=("image/png",))
    thumbnail = requests.get(f"{url}/thumbnail", headers={"Accept": "image/jpeg"}, timeout=30)
    head = requests.head(f"{url}/rendered", headers={"Accept": "image/png"}, timeout=30)

    assert Image.open(BytesIO(rendered)).size == (ct.Columns, ct.Rows)
    assert thumbnail.status_code == 200
    assert max(Image.open(BytesIO(thumbnail.content)).size) == 128
    assert head.status_code == 200
    assert head.headers["Content-Type"] == "image/png"
    assert head.content == b""
    assert pixels.invocations == before + 3


def test_lossy_target_rejected_locally(stack: Stack, pixels: PixelFunction) -> None:
    """Nothing produces JPEG Baseline, so the 406 needs no codec and no pixel function."""
    before = pixels.invocations
    ct = read("CT_small.dcm")
    url = f"{stack.url}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"

    response = requests.get(
        f"{url}/instances/{ct.SOPInstanceUID}",
        headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}'},
        timeout=30,
    )

    assert response.status_code == 406
    assert pixels.invocations == before


def test_failed_pixel_function_gives_502(settings: Settings) -> None:
    environment = lambda_environment(settings)
    del environment["CIRRUS_BUCKET"]  # its settings cannot load, so every invocation fails
    broken = PixelFunction(environment)
    try:
        status, body = rendered_through(settings, broken.forwarder())
    finally:
        broken.stop()

    assert status == 502
    assert "image service failed" in body["error"]


def test_unreachable_pixel_function_gives_502(settings: Settings) -> None:
    client = boto3.client(
        "lambda",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )

    status, body = rendered_through(settings, PixelForwarder(client, "cirrus-pixels"))

    assert status == 502
    assert "image service failed" in body["error"]


def test_missing_pixel_function_gives_500(settings: Settings) -> None:
    status, body = rendered_through(settings, None)

    assert status == 500
    assert "cannot decode or encode pixel data" in body["error"]


def rendered_through(
    settings: Settings, forwarder: PixelForwarder | None
) -> tuple[int, dict[str, str]]:
    """Ask the codec-less handler for a rendered image with ``forwarder``; status and body."""
    ct = read("CT_small.dcm")
    path = f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
    path = f"{path}/instances/{ct.SOPInstanceUID}/rendered"
    event = {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "headers": {"Host": "api.example.com", "Accept": "image/png"},
        "multiValueHeaders": {"Host": ["api.example.com"], "Accept": ["image/png"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {"stage": "prod", "requestId": "r-1", "path": f"/prod{path}"},
        "body": None,
        "isBase64Encoded": False,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transcode, "CODECS_INSTALLED", False)
        view = dataclasses.replace(dicomweb_services(Services(settings)), pixels=forwarder)
        response = handle(event, None, view)
    return int(response["statusCode"]), json.loads(response["body"])


# Import without the codecs, as in the DICOMweb and ingest functions' layers

CODEC_DISTRIBUTIONS = (
    "numpy",
    "pillow",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pyjpegls",
    "python-gdcm",
)


def site_without_codecs(target: Path) -> Path:
    """Link every top-level entry of site-packages except the codec distributions' files."""
    from importlib.metadata import distribution

    hidden: set[str] = set()
    site = Path(np.__file__).resolve().parents[1]
    for name in CODEC_DISTRIBUTIONS:
        for file in distribution(name).files or ():
            hidden.add(Path(str(file)).parts[0])
    target.mkdir()
    for entry in site.iterdir():
        if entry.name not in hidden and not entry.name.endswith(".pth"):
            (target / entry.name).symlink_to(entry)
    return target


@pytest.mark.parametrize("module", ["functions.dicomweb.handler", "functions.ingest.handler"])
def test_handlers_import_without_codecs(tmp_path: Path, module: str) -> None:
    site = site_without_codecs(tmp_path / "site")
    shared = REPO / "layers" / "shared" / "python"
    probe = (
        f"import {module}, sys\n"
        "from cirrus.dicom import transcode\n"
        "codecs = ('numpy', 'PIL', 'gdcm', 'pylibjpeg')\n"
        "loaded = sorted(name for name in codecs if name in sys.modules)\n"
        "print(loaded, transcode.CODECS_INSTALLED)\n"
    )
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(shared), str(site)]),
        "AWS_LAMBDA_FUNCTION_NAME": "import-check",
    }

    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["[]", "False"]
