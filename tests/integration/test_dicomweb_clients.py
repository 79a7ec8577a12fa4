"""The DICOMweb API as real clients use it: dicomweb-client's whole API and OHIF's requests.

The OHIF requests copy the URLs and headers of OHIF Viewer 3's DICOMweb data source
(``extensions/default/src/DicomWebDataSource``). They are the study list with
``includefield``, the series list of a study, series metadata, and frames with
``transfer-syntax=*``. OHIF quotes the ``type`` parameter by default, and leaves it unquoted
with ``omitQuotationForMultipartRequest``.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from cirrus.config import Settings
from cirrus.dicomweb.multipart import parse_multipart_related
from tests.integration.dicomweb_stack import Stack, read, running_stack

FILES = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "SC_rgb_rle_2frame.dcm"]
PATIENT_ID = "CLIENTS-1"
DICOM_JSON = {"Accept": "application/dicom+json"}
# OHIF's study list fields: StudyDescription, Modality, ReferringPhysicianName, PatientBirthDate.
OHIF_STUDY_FIELDS = "00081030%2C00080060%2C00080090%2C00100030"
# OHIF's series list fields: SeriesDescription, SeriesDate.
OHIF_SERIES_FIELDS = "0008103E%2C00080021"
OHIF_FRAME_ACCEPTS = [
    'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
]


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


@pytest.fixture
def loaded(stack: Stack) -> dict[str, pydicom.Dataset]:
    """Store the test files as one patient's studies and index them."""
    datasets = {}
    for name in FILES:
        ds = read(name)
        ds.PatientID = PATIENT_ID
        ds.StudyInstanceUID = generate_uid()
        datasets[name] = ds
    stack.client.store_instances(list(datasets.values()))
    assert stack.index() == len(FILES)
    return datasets


def uid(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def native_frame(ds: pydicom.Dataset, number: int) -> bytes:
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return bytes(ds.PixelData[(number - 1) * size : number * size])


# dicomweb-client: search


def test_client_search_for_studies(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    client = stack.client

    studies = client.search_for_studies(search_filters={"PatientID": PATIENT_ID})
    page = client.search_for_studies(search_filters={"PatientID": PATIENT_ID}, limit=2, offset=1)
    ct = loaded["CT_small.dcm"]
    (one,) = client.search_for_studies(
        search_filters={"StudyInstanceUID": ct.StudyInstanceUID},
        fields=["StudyDescription"],
    )

    assert sorted(uid(item, "0020000D") for item in studies) == sorted(
        ds.StudyInstanceUID for ds in loaded.values()
    )
    assert len(page) == 2
    assert uid(one, "00201208") == 1
    assert one["00080061"]["Value"] == ["CT"]


def test_client_search_for_series(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    client = stack.client
    mr = loaded["MR_small.dcm"]

    in_study = client.search_for_series(mr.StudyInstanceUID)
    everywhere = client.search_for_series(search_filters={"Modality": "MR"})

    (series,) = in_study
    assert uid(series, "0020000E") == mr.SeriesInstanceUID
    assert uid(series, "00080060") == "MR"
    assert uid(series, "00201209") == 1
    assert mr.SeriesInstanceUID in [uid(item, "0020000E") for item in everywhere]


def test_client_search_for_instances(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    client = stack.client
    dose = loaded["rtdose.dcm"]

    in_series = client.search_for_instances(dose.StudyInstanceUID, dose.SeriesInstanceUID)
    in_study = client.search_for_instances(dose.StudyInstanceUID)
    everywhere = client.search_for_instances(search_filters={"SOPClassUID": dose.SOPClassUID})

    assert [uid(item, "00080018") for item in in_series] == [dose.SOPInstanceUID]
    assert [uid(item, "00080018") for item in in_study] == [dose.SOPInstanceUID]
    assert [uid(item, "00080018") for item in everywhere] == [dose.SOPInstanceUID]


# dicomweb-client: retrieve


def test_client_retrieve_objects(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    client = stack.client

    for ds in loaded.values():
        (study,) = client.retrieve_study(ds.StudyInstanceUID)
        (series,) = client.retrieve_series(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        instance = client.retrieve_instance(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        )
        for retrieved in (study, series, instance):
            assert retrieved.SOPInstanceUID == ds.SOPInstanceUID
            # WADO-RS may transcode when Accept names no syntax (docs/transfer-syntaxes.md).
            assert np.array_equal(retrieved.pixel_array, ds.pixel_array)


def test_client_retrieve_metadata(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    client = stack.client

    for ds in loaded.values():
        (study,) = client.retrieve_study_metadata(ds.StudyInstanceUID)
        (series,) = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        instance = client.retrieve_instance_metadata(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        )
        assert study == series == instance
        assert uid(instance, "00080018") == ds.SOPInstanceUID
        assert "BulkDataURI" in instance["7FE00010"]


def test_client_retrieve_frames(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    dose = loaded["rtdose.dcm"]

    frames = stack.client.retrieve_instance_frames(
        dose.StudyInstanceUID, dose.SeriesInstanceUID, dose.SOPInstanceUID, frame_numbers=[1, 3]
    )

    assert frames == [native_frame(dose, 1), native_frame(dose, 3)]


def test_client_retrieve_bulkdata(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    ct = loaded["CT_small.dcm"]
    client = stack.client
    metadata = client.retrieve_instance_metadata(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
    )

    (pixels,) = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"])

    assert pixels == ct.PixelData


def test_client_retrieve_instance_rendered(
    stack: Stack, loaded: dict[str, pydicom.Dataset]
) -> None:
    ct = loaded["CT_small.dcm"]
    dose = loaded["rtdose.dcm"]
    client = stack.client

    instance = client.retrieve_instance_rendered(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, media_types=("image/png",)
    )
    frame = client.retrieve_instance_frames_rendered(
        dose.StudyInstanceUID,
        dose.SeriesInstanceUID,
        dose.SOPInstanceUID,
        frame_numbers=[2],
        media_types=("image/png",),
    )

    assert Image.open(BytesIO(instance)).size == (ct.Columns, ct.Rows)
    assert Image.open(BytesIO(frame)).size == (dose.Columns, dose.Rows)


def test_client_retrieve_series_rendered(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    ct = loaded["CT_small.dcm"]

    rendered = stack.client.retrieve_series_rendered(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, media_types=("image/png",)
    )

    assert Image.open(BytesIO(rendered)).size == (ct.Columns, ct.Rows)


def test_client_retrieve_study_rendered(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    ct = loaded["CT_small.dcm"]
    # dicomweb-client 0.61 has no method for the rendered study resource, so the request is
    # the one its retrieve_series_rendered sends, on the study URL.
    response = requests.get(
        f"{stack.url}/studies/{ct.StudyInstanceUID}/rendered",
        headers={"Accept": "image/png"},
        timeout=30,
    )

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    assert Image.open(BytesIO(response.content)).size == (ct.Columns, ct.Rows)


# dicomweb-client: delete


def test_client_delete(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    client = stack.client
    ct, mr, dose = loaded["CT_small.dcm"], loaded["MR_small.dcm"], loaded["rtdose.dcm"]

    client.delete_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    client.delete_series(mr.StudyInstanceUID, mr.SeriesInstanceUID)
    client.delete_study(dose.StudyInstanceUID)

    remaining = client.search_for_studies(search_filters={"PatientID": PATIENT_ID})
    assert [uid(item, "0020000D") for item in remaining] == [
        loaded["SC_rgb_rle_2frame.dcm"].StudyInstanceUID
    ]
    with pytest.raises(requests.HTTPError) as raised:
        client.delete_study(dose.StudyInstanceUID)
    assert raised.value.response.status_code == 404


# OHIF Viewer 3


def test_ohif_study_list(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    url = (
        f"{stack.url}/studies?limit=101&offset=0&fuzzymatching=false"
        f"&includefield={OHIF_STUDY_FIELDS}&00100020=*{PATIENT_ID[2:-2]}*"
    )

    response = requests.get(url, headers=DICOM_JSON, timeout=30)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/dicom+json"
    studies = {uid(item, "0020000D"): item for item in response.json()}
    assert sorted(studies) == sorted(ds.StudyInstanceUID for ds in loaded.values())
    ct = studies[loaded["CT_small.dcm"].StudyInstanceUID]
    for tag in ("00080020", "00100010", "00100020", "00201208", "00080061"):
        assert tag in ct, tag
    assert uid(ct, "00100020") == PATIENT_ID
    assert uid(ct, "00201208") == 1


def test_ohif_study_list_by_uid(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    wanted = [loaded["CT_small.dcm"].StudyInstanceUID, loaded["MR_small.dcm"].StudyInstanceUID]
    url = (
        f"{stack.url}/studies?limit=101&offset=0&fuzzymatching=false"
        f"&includefield={OHIF_STUDY_FIELDS}&StudyInstanceUID={'%5C'.join(wanted)}"
    )

    response = requests.get(url, headers=DICOM_JSON, timeout=30)

    assert response.status_code == 200, response.text
    assert sorted(uid(item, "0020000D") for item in response.json()) == sorted(wanted)


def test_ohif_series_list(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    mr = loaded["MR_small.dcm"]
    url = f"{stack.url}/studies/{mr.StudyInstanceUID}/series?includefield={OHIF_SERIES_FIELDS}"

    response = requests.get(url, headers=DICOM_JSON, timeout=30)

    assert response.status_code == 200, response.text
    (series,) = response.json()
    assert uid(series, "0020000E") == mr.SeriesInstanceUID
    assert uid(series, "00080060") == "MR"
    assert uid(series, "00200011") == mr.SeriesNumber
    assert uid(series, "00201209") == 1


def test_ohif_series_metadata(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    dose = loaded["rtdose.dcm"]
    url = f"{stack.url}/studies/{dose.StudyInstanceUID}/series/{dose.SeriesInstanceUID}/metadata"

    response = requests.get(url, headers=DICOM_JSON, timeout=30)

    assert response.status_code == 200, response.text
    (instance,) = response.json()
    assert uid(instance, "00080018") == dose.SOPInstanceUID
    assert uid(instance, "00280008") == dose.NumberOfFrames
    assert instance["7FE00010"]["BulkDataURI"].startswith(stack.url)


def test_ohif_frames_native(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    dose = loaded["rtdose.dcm"]
    instance_url = (
        f"{stack.url}/studies/{dose.StudyInstanceUID}/series/{dose.SeriesInstanceUID}"
        f"/instances/{dose.SOPInstanceUID}"
    )

    for accept in OHIF_FRAME_ACCEPTS:
        response = requests.get(f"{instance_url}/frames/2", headers={"Accept": accept}, timeout=30)

        assert response.status_code == 200, (accept, response.text)
        media = parse_multipart_related(response.headers["Content-Type"], response.content)
        (part,) = media.parts
        assert part.body == native_frame(dose, 2), accept
        assert part.content_type is not None
        assert part.content_type.startswith("application/octet-stream"), accept


def test_ohif_frames_compressed(stack: Stack, loaded: dict[str, pydicom.Dataset]) -> None:
    rle = loaded["SC_rgb_rle_2frame.dcm"]
    instance_url = (
        f"{stack.url}/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}"
        f"/instances/{rle.SOPInstanceUID}"
    )
    stored_frames = list(generate_frames(rle.PixelData, number_of_frames=2))

    for accept in OHIF_FRAME_ACCEPTS:
        response = requests.get(f"{instance_url}/frames/2", headers={"Accept": accept}, timeout=30)

        assert response.status_code == 200, (accept, response.text)
        media = parse_multipart_related(response.headers["Content-Type"], response.content)
        (part,) = media.parts
        # transfer-syntax=* gets the frame as stored, RLE Lossless here.
        assert part.body == stored_frames[1], accept
        assert part.content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"
