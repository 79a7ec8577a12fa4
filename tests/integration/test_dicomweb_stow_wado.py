"""STOW-RS and WADO-RS over HTTP: dicomweb-client and raw requests against the local adapter.

The app runs with a real ObjectStore and IndexReader on moto. Ingest is called directly after
each store, in place of the queue poller of the local stack.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from cirrus.aws import AwsClients
from cirrus.config import Settings
from cirrus.dicomweb.app import DicomwebServices
from cirrus.dicomweb.bundles import MetadataBundles
from cirrus.dicomweb.multipart import Part, build_multipart_related, parse_multipart_related
from cirrus.index.models import IndexRecord, bind_index_model, instance_sk, study_pk
from cirrus.index.reader import IndexReader
from cirrus.index.writer import IndexWriter
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.http import HttpServer, serve_http
from cirrus.storage.keys import INSTANCE_SUFFIX, site_prefix
from cirrus.storage.objects import ObjectStore
from functions.dicomweb.handler import handle

TEST_FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm"]
STOW_TYPE = 'multipart/related; type="application/dicom"'
# dicomweb-client media types that ask for instances in their stored transfer syntax.
AS_STORED = (("application/dicom", "*"),)
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
RETRIEVE_URL = "00081190"
REFERENCED_SOP_INSTANCE_UID = "00081155"
REFERENCED_SOP_CLASS_UID = "00081150"


@dataclass
class Dicomweb:
    url: str
    server: HttpServer
    store: ObjectStore
    model: type[IndexRecord]
    site: str

    @property
    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.url)

    def ingest_all(self) -> int:
        """Index every stored instance, as the ingest queue would, and return how many."""
        writer = IndexWriter(self.model, self.store)
        count = 0
        for obj in self.store.list_keys(site_prefix(self.site)):
            if obj.key.endswith(INSTANCE_SUFFIX):
                ingest_object(self.store, writer, ObjectEvent(obj.key, etag=obj.etag))
                count += 1
        return count

    def stored_keys(self) -> list[str]:
        return [obj.key for obj in self.store.list_keys(site_prefix(self.site))]


def start_dicomweb(settings: Settings, store: ObjectStore) -> Dicomweb:
    model = bind_index_model(settings)
    services = DicomwebServices(
        store=store,
        reader=IndexReader(model, store),
        qido=None,
        site=settings.default_site,
        bundles=MetadataBundles(model, store),
    )
    server = serve_http(functools.partial(handle, services=services), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/dicomweb"
    return Dicomweb(url, server, store, model, settings.default_site)


@pytest.fixture
def dicomweb(settings: Settings, object_store: ObjectStore) -> Iterator[Dicomweb]:
    service = start_dicomweb(settings, object_store)
    yield service
    service.server.shutdown()


def read_test_file(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def encode(ds: pydicom.Dataset) -> bytes:
    with BytesIO() as buffer:
        pydicom.dcmwrite(buffer, ds)
        return buffer.getvalue()


def post_parts(url: str, parts: list[bytes], content_type: str = STOW_TYPE) -> requests.Response:
    body, multipart_type = build_multipart_related(
        [Part(part, content_type="application/dicom") for part in parts], "application/dicom"
    )
    boundary = multipart_type.rsplit("boundary=", 1)[1]
    return requests.post(
        url, data=body, headers={"Content-Type": f"{content_type}; boundary={boundary}"}
    )


def assert_same_dataset(retrieved: pydicom.Dataset, original: pydicom.Dataset) -> None:
    assert retrieved.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert [elem.tag for elem in retrieved] == [elem.tag for elem in original]
    for elem in original:
        assert retrieved[elem.tag].VR == elem.VR, elem.tag
        assert retrieved[elem.tag].value == elem.value, elem.tag


def assert_same_metadata(
    client: DICOMwebClient, metadata: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Compare served DICOM JSON with pydicom's, resolving each BulkDataURI over HTTP."""
    assert sorted(metadata) == sorted(expected)
    for tag, attribute in expected.items():
        served = metadata[tag]
        assert served["vr"] == attribute["vr"], tag
        if "BulkDataURI" in served:
            (value,) = client.retrieve_bulkdata(served["BulkDataURI"])
            assert value == base64.b64decode(attribute["InlineBinary"]), tag
        elif attribute["vr"] == "SQ":
            assert len(served["Value"]) == len(attribute["Value"]), tag
            for served_item, item in zip(served["Value"], attribute["Value"], strict=True):
                assert_same_metadata(client, served_item, item)
        else:
            assert served == attribute, tag


# Store and retrieve with dicomweb-client


def test_store_and_retrieve_instances(dicomweb: Dicomweb) -> None:
    originals = [read_test_file(name) for name in TEST_FILES]
    client = dicomweb.client

    response = client.store_instances(originals)

    referenced = response.ReferencedSOPSequence
    assert [item.ReferencedSOPInstanceUID for item in referenced] == [
        ds.SOPInstanceUID for ds in originals
    ]
    assert [item.ReferencedSOPClassUID for item in referenced] == [
        ds.SOPClassUID for ds in originals
    ]
    assert "FailedSOPSequence" not in response
    assert response.RetrieveURL == ""  # four studies, so no single study URL
    assert dicomweb.ingest_all() == 4

    for ds, item in zip(originals, referenced, strict=True):
        assert item.RetrieveURL == (
            f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        instance = client.retrieve_instance(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, media_types=AS_STORED
        )
        assert_same_dataset(instance, ds)
        (series_instance,) = client.retrieve_series(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, media_types=AS_STORED
        )
        assert_same_dataset(series_instance, ds)
        (study_instance,) = client.retrieve_study(ds.StudyInstanceUID, media_types=AS_STORED)
        assert_same_dataset(study_instance, ds)


def test_retrieve_bytes_as_stored(dicomweb: Dicomweb) -> None:
    ds = read_test_file("JPEG2000.dcm")
    part10 = encode(ds)
    assert post_parts(f"{dicomweb.url}/studies", [part10]).status_code == 200
    dicomweb.ingest_all()

    response = requests.get(
        f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )

    assert response.status_code == 200
    (part,) = parse_multipart_related(response.headers["Content-Type"], response.content).parts
    assert part.body == part10
    assert part.content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.91"


def test_store_study_and_retrieve_series(dicomweb: Dicomweb) -> None:
    first = read_test_file("CT_small.dcm")
    second = deepcopy(first)
    second.SOPInstanceUID = generate_uid()
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    client = dicomweb.client

    response = client.store_instances([first, second], first.StudyInstanceUID)

    assert response.RetrieveURL == f"{dicomweb.url}/studies/{first.StudyInstanceUID}"
    assert len(response.ReferencedSOPSequence) == 2
    dicomweb.ingest_all()
    retrieved = client.retrieve_series(
        first.StudyInstanceUID, first.SeriesInstanceUID, media_types=AS_STORED
    )
    by_uid = {ds.SOPInstanceUID: ds for ds in retrieved}
    assert sorted(by_uid) == sorted([first.SOPInstanceUID, second.SOPInstanceUID])
    assert_same_dataset(by_uid[first.SOPInstanceUID], first)
    assert_same_dataset(by_uid[second.SOPInstanceUID], second)
    assert len(client.retrieve_study(first.StudyInstanceUID)) == 2


def test_retrieve_metadata_matches_pydicom(dicomweb: Dicomweb) -> None:
    originals = [read_test_file(name) for name in TEST_FILES]
    client = dicomweb.client
    client.store_instances(originals)
    dicomweb.ingest_all()

    for ds in originals:
        expected = ds.to_json_dict()
        metadata = client.retrieve_instance_metadata(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        )
        assert_same_metadata(client, metadata, expected)
        (series_metadata,) = client.retrieve_series_metadata(
            ds.StudyInstanceUID, ds.SeriesInstanceUID
        )
        assert series_metadata == metadata
        (study_metadata,) = client.retrieve_study_metadata(ds.StudyInstanceUID)
        assert study_metadata == metadata


def test_metadata_bulkdata_uris_absolute(dicomweb: Dicomweb) -> None:
    ds = read_test_file("MR_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()

    response = requests.get(f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/metadata")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    (metadata,) = response.json()
    instance_url = (
        f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    assert metadata["7FE00010"]["BulkDataURI"] == f"{instance_url}/bulkdata/7FE00010"


def test_bulkdata_pixel_data_ranged_and_whole(
    dicomweb: Dicomweb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pixel Data comes from a ranged GET when indexed, else from the whole object."""
    ds = read_test_file("CT_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    url = (
        f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/bulkdata/7FE00010"
    )
    whole_reads: list[str] = []
    read_whole = dicomweb.store.get

    def spy_get(key: str) -> bytes:
        whole_reads.append(key)
        return read_whole(key)

    monkeypatch.setattr(dicomweb.store, "get", spy_get)

    accept = {"Accept": 'multipart/related; type="application/octet-stream"'}
    ranged = requests.get(url, headers=accept)
    assert whole_reads == []
    record = dicomweb.model.get(
        study_pk(dicomweb.site, ds.StudyInstanceUID),
        instance_sk(ds.SeriesInstanceUID, ds.SOPInstanceUID),
    )
    record.update(actions=[dicomweb.model.pixel_offset.remove()])
    whole = requests.get(url)
    assert len(whole_reads) == 1

    for response in (ranged, whole):
        assert response.status_code == 200
        media = parse_multipart_related(response.headers["Content-Type"], response.content)
        assert media.type == "application/octet-stream"
        (part,) = media.parts
        assert part.content_type == "application/octet-stream"
        assert part.body == ds.PixelData


def test_bulkdata_unknown_path(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    instance = (
        f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )

    for path in ("00091234", "00081140/5/00081155", "7FE00010/0"):
        response = requests.get(f"{instance}/bulkdata/{path}")
        assert response.status_code == 404, path
        assert "bulk data" in response.json()["error"], path


# STOW-RS failures


def failed_items(response: requests.Response) -> list[dict[str, Any]]:
    return list(response.json()[FAILED_SOP_SEQUENCE]["Value"])


def test_stow_garbage_part(dicomweb: Dicomweb) -> None:
    response = post_parts(f"{dicomweb.url}/studies", [b"this is not DICOM" * 20])

    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/dicom+json"
    body = response.json()
    assert REFERENCED_SOP_SEQUENCE not in body
    (item,) = failed_items(response)
    assert item == {FAILURE_REASON: {"vr": "US", "Value": [0xC000]}}
    assert "part 1 not stored (0xC000)" in response.headers["Warning"]
    assert dicomweb.stored_keys() == []


def test_stow_missing_sop_instance_uid(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    del ds.SOPInstanceUID

    response = post_parts(f"{dicomweb.url}/studies", [encode(ds)])

    assert response.status_code == 409
    (item,) = failed_items(response)
    assert item[FAILURE_REASON]["Value"] == [0xA900]
    assert item[REFERENCED_SOP_CLASS_UID]["Value"] == [ds.SOPClassUID]
    assert REFERENCED_SOP_INSTANCE_UID not in item
    assert "SOPInstanceUID (0008,0018)" in response.headers["Warning"]
    assert dicomweb.stored_keys() == []


def test_stow_unknown_vr_fails_alone(dicomweb: Dicomweb) -> None:
    good = encode(read_test_file("MR_small.dcm"))
    bad = bytearray(encode(read_test_file("CT_small.dcm")))
    position = bad.index(b"\x08\x00\x18\x00UI")  # SOPInstanceUID (0008,0018), explicit VR
    bad[position + 4 : position + 6] = b"UU"

    response = post_parts(f"{dicomweb.url}/studies", [bytes(bad), good])

    assert response.status_code == 202
    (item,) = failed_items(response)
    assert item[FAILURE_REASON]["Value"] == [0xC000]
    assert "Unknown Value Representation 'UU'" in response.headers["Warning"]
    assert len(dicomweb.stored_keys()) == 1


def test_stow_good_and_bad_parts(dicomweb: Dicomweb) -> None:
    good = read_test_file("MR_small.dcm")

    response = post_parts(f"{dicomweb.url}/studies", [encode(good), b"\x00" * 200])

    assert response.status_code == 202
    body = response.json()
    (referenced,) = body[REFERENCED_SOP_SEQUENCE]["Value"]
    assert referenced[REFERENCED_SOP_INSTANCE_UID]["Value"] == [good.SOPInstanceUID]
    assert referenced[RETRIEVE_URL]["Value"] == [
        f"{dicomweb.url}/studies/{good.StudyInstanceUID}/series/{good.SeriesInstanceUID}"
        f"/instances/{good.SOPInstanceUID}"
    ]
    assert body[RETRIEVE_URL]["Value"] == [f"{dicomweb.url}/studies/{good.StudyInstanceUID}"]
    (failed,) = failed_items(response)
    assert failed[FAILURE_REASON]["Value"] == [0xC000]
    assert len(dicomweb.stored_keys()) == 1


def test_stow_wrong_study_in_url(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")

    response = post_parts(f"{dicomweb.url}/studies/1.2.3.4", [encode(ds)])

    assert response.status_code == 409
    (item,) = failed_items(response)
    assert item[FAILURE_REASON]["Value"] == [0xA900]
    assert item[REFERENCED_SOP_INSTANCE_UID]["Value"] == [ds.SOPInstanceUID]
    assert "not to the study 1.2.3.4" in response.headers["Warning"]
    assert dicomweb.stored_keys() == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the server reads it too
def test_stow_warning_header_sanitized(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.StudyInstanceUID = "1.2\r\nX-Injected: yes\u00e9"
        part10 = encode(ds)

    response = post_parts(f"{dicomweb.url}/studies/1.2.3", [part10])

    assert response.status_code == 409
    assert "X-Injected" not in response.headers
    assert "instance belongs to study 1.2??X-Injected: yes?" in response.headers["Warning"]


UNSUPPORTED_STOW_TYPES = [
    ("application/dicom", "Content-Type application/dicom is not supported"),
    (
        'multipart/related; type="application/dicom+json"; boundary=x',
        "type=application/dicom+json is not supported",
    ),
    ("multipart/related; boundary=x", "no type parameter is not supported"),
    (None, "request has no Content-Type"),
]


def test_stow_unsupported_media_type(dicomweb: Dicomweb) -> None:
    for content_type, reason in UNSUPPORTED_STOW_TYPES:
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = requests.post(
            f"{dicomweb.url}/studies", data=b"--x\r\n\r\n{}\r\n--x--", headers=headers
        )

        assert response.status_code == 415, content_type
        assert response.headers["Content-Type"] == "application/json", content_type
        message = response.json()["error"]
        assert reason in message, content_type
        assert 'multipart/related; type="application/dicom"' in message, content_type


def test_stow_part_of_other_type(dicomweb: Dicomweb) -> None:
    body = b"--x\r\nContent-Type: application/dicom+json\r\n\r\n{}\r\n--x--"
    response = requests.post(
        f"{dicomweb.url}/studies",
        data=body,
        headers={"Content-Type": f"{STOW_TYPE}; boundary=x"},
    )

    assert response.status_code == 415
    assert "part 1 has Content-Type application/dicom+json" in response.json()["error"]


def test_stow_missing_boundary(dicomweb: Dicomweb) -> None:
    response = requests.post(
        f"{dicomweb.url}/studies",
        data=b"--x\r\n\r\nx\r\n--x--",
        headers={"Content-Type": STOW_TYPE},
    )

    assert response.status_code == 400
    assert "no boundary parameter" in response.json()["error"]


def test_stow_truncated_body(dicomweb: Dicomweb) -> None:
    part10 = encode(read_test_file("CT_small.dcm"))
    response = requests.post(
        f"{dicomweb.url}/studies",
        data=b"--x\r\n\r\n" + part10[:1000],
        headers={"Content-Type": f"{STOW_TYPE}; boundary=x"},
    )

    assert response.status_code == 400
    assert "no closing delimiter" in response.json()["error"]
    assert dicomweb.stored_keys() == []


def test_stow_storage_unavailable(
    settings: Settings, clients: AwsClients, object_store: ObjectStore
) -> None:
    missing_bucket = ObjectStore(clients.s3, f"{settings.bucket}-missing", settings.kms_key_id)
    service = start_dicomweb(settings, missing_bucket)
    try:
        parts = [encode(read_test_file(name)) for name in ("CT_small.dcm", "MR_small.dcm")]
        response = post_parts(f"{service.url}/studies", parts)
    finally:
        service.server.shutdown()

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    reasons = [item[FAILURE_REASON]["Value"] for item in failed_items(response)]
    assert reasons == [[0xA700], [0xA700]]
    assert REFERENCED_SOP_SEQUENCE not in response.json()
    assert list(object_store.list_keys(site_prefix(settings.default_site))) == []


def test_stow_storage_unavailable_and_inflation_limit(
    settings: Settings, clients: AwsClients, object_store: ObjectStore
) -> None:
    bomb = read_test_file("CT_small.dcm")
    bomb.Rows, bomb.Columns = 1000, 12_000
    bomb.PixelData = bytes(24 * 1024**2)
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    missing_bucket = ObjectStore(clients.s3, f"{settings.bucket}-missing", settings.kms_key_id)
    service = start_dicomweb(settings, missing_bucket)
    try:
        parts = [encode(read_test_file("MR_small.dcm")), encode(bomb)]
        response = post_parts(f"{service.url}/studies", parts)
    finally:
        service.server.shutdown()

    # A retry could store the first part but never the second, so the status is 409, not 503.
    assert response.status_code == 409
    assert "Retry-After" not in response.headers
    reasons = [item[FAILURE_REASON]["Value"] for item in failed_items(response)]
    assert reasons == [[0xA700], [0xA700]]
    assert "inflates to more than" in response.headers["Warning"]
    assert list(object_store.list_keys(site_prefix(settings.default_site))) == []


# WADO-RS failures


def test_wado_unknown_study(dicomweb: Dicomweb) -> None:
    client = dicomweb.client
    with pytest.raises(requests.HTTPError) as raised:
        client.retrieve_study("1.2.3.999")

    assert raised.value.response.status_code == 404
    assert raised.value.response.json() == {"error": "study 1.2.3.999 not found"}


def test_wado_unknown_resources(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    study = f"{dicomweb.url}/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"

    for url in (
        f"{study}/series/1.2.3",
        f"{study}/series/1.2.3/metadata",
        f"{series}/instances/1.2.3",
        f"{series}/instances/1.2.3/metadata",
        f"{series}/instances/1.2.3/bulkdata/7FE00010",
        f"{dicomweb.url}/studies/1.2.3/metadata",
    ):
        response = requests.get(url)
        assert response.status_code == 404, url
        assert "not found" in response.json()["error"], url


def test_wado_unknown_route(dicomweb: Dicomweb) -> None:
    response = requests.get(f"{dicomweb.url}/studies/1.2.3/thumbnail/extra")

    assert response.status_code == 404
    assert response.json() == {
        "error": "no DICOMweb resource for GET /studies/1.2.3/thumbnail/extra"
    }


def test_wado_unavailable_transfer_syntax(dicomweb: Dicomweb) -> None:
    ds = read_test_file("JPEG2000.dcm")
    client = dicomweb.client
    client.store_instances([ds])
    dicomweb.ingest_all()

    with pytest.raises(requests.HTTPError) as raised:
        client.retrieve_instance(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            media_types=(("application/dicom", "1.2.840.10008.1.2.4.50"),),
        )

    response = raised.value.response
    assert response.status_code == 406
    message = response.json()["error"]
    assert "stored in transfer syntax 1.2.840.10008.1.2.4.91" in message
    assert "cannot be sent as application/dicom (1.2.840.10008.1.2.4.50)" in message


NOT_ACCEPTABLE = [
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
    "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50, "
    "application/json",
    "application/dicom+json",
    "*/*; q=0",
]
ACCEPTABLE = [
    None,
    "*/*",
    "multipart/*",
    'multipart/related; type="application/dicom"',
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50, '
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.91',
]


def test_wado_accept_negotiation(dicomweb: Dicomweb) -> None:
    ds = read_test_file("JPEG2000.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    url = f"{dicomweb.url}/studies/{ds.StudyInstanceUID}"

    for accept in NOT_ACCEPTABLE:
        response = requests.get(url, headers={"Accept": accept})
        assert response.status_code == 406, accept
        assert response.headers["Content-Type"] == "application/json", accept

    for acceptable in ACCEPTABLE:
        headers = {} if acceptable is None else {"Accept": acceptable}
        response = requests.get(url, headers=headers)
        assert response.status_code == 200, acceptable
        media = parse_multipart_related(response.headers["Content-Type"], response.content)
        assert media.type == "application/dicom", acceptable
        assert len(media.parts) == 1, acceptable


def test_metadata_not_acceptable(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()

    response = requests.get(
        f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/metadata",
        headers={"Accept": "application/dicom+xml"},
    )

    assert response.status_code == 406
    assert json.loads(response.text) == {
        "error": "this resource is available only as application/dicom+json"
    }


def test_head_like_get_without_body(dicomweb: Dicomweb) -> None:
    stored = dicomweb.client.store_instances([read_test_file("CT_small.dcm")])
    assert stored is not None
    dicomweb.ingest_all()
    study = read_test_file("CT_small.dcm").StudyInstanceUID
    url = f"{dicomweb.url}/studies/{study}/metadata"
    get = requests.get(url, timeout=10)
    head = requests.head(url, timeout=10)
    assert get.status_code == 200
    assert head.status_code == 200
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert head.headers["Content-Length"] != "0"
    assert head.content == b""


def test_unsupported_methods_405(dicomweb: Dicomweb) -> None:
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        response = requests.request(method, f"{dicomweb.url}/studies", timeout=10)
        assert response.status_code == 405, method
        assert response.headers["Allow"] == "GET, HEAD, POST", method


def _frame_size(ds: pydicom.Dataset) -> int:
    return ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8


def test_frames_native(dicomweb: Dicomweb) -> None:
    ds = read_test_file("rtdose.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    size = _frame_size(ds)
    frames = dicomweb.client.retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1, 3]
    )
    assert frames == [ds.PixelData[:size], ds.PixelData[2 * size : 3 * size]]


def test_frames_encapsulated_as_stored(dicomweb: Dicomweb) -> None:
    ds = read_test_file("SC_rgb_rle_2frame.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    url = (
        f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/2"
    )
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    response = requests.get(url, headers={"Accept": accept}, timeout=10)
    assert response.status_code == 200
    parts = parse_multipart_related(response.headers["Content-Type"], response.content).parts
    expected = list(generate_frames(ds.PixelData, number_of_frames=2))[1]
    assert [part.body for part in parts] == [expected]
    assert "transfer-syntax=1.2.840.10008.1.2.5" in parts[0].content_type
    plain = requests.get(
        url, timeout=10, headers={"Accept": 'multipart/related; type="application/octet-stream"'}
    )
    assert plain.status_code == 200
    (decoded,) = parse_multipart_related(plain.headers["Content-Type"], plain.content).parts
    assert decoded.body == ds.pixel_array[1].tobytes()
    assert decoded.content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"


def test_frames_invalid_numbers(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    base = (
        f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames"
    )
    assert requests.get(f"{base}/2", timeout=10).status_code == 404
    for bad in ("0", "-1", "one", "1,,2"):
        response = requests.get(f"{base}/{bad}", timeout=10)
        assert response.status_code == 400, bad
        assert "frame number" in response.json()["error"], bad


def _instance_url(dicomweb: Dicomweb, ds: pydicom.Dataset) -> str:
    return (
        f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "rtdose.dcm"])
def test_rendered_image(dicomweb: Dicomweb, name: str) -> None:
    ds = read_test_file(name)
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    response = requests.get(f"{_instance_url(dicomweb, ds)}/rendered", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    image = Image.open(BytesIO(response.content))
    assert image.size == (ds.Columns, ds.Rows)
    assert image.mode == ("RGB" if ds.SamplesPerPixel == 3 else "L")


def test_rendered_window_viewport_png(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    url = f"{_instance_url(dicomweb, ds)}/rendered?window=40,400&viewport=64,64"
    response = requests.get(url, headers={"Accept": "image/png"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    image = Image.open(BytesIO(response.content))
    assert image.size == (64, 64)
    # A soft tissue window on CT: air is black and bone is white.
    pixels = np.asarray(image)
    assert pixels.min() == 0
    assert pixels.max() == 255
    bad = requests.get(f"{_instance_url(dicomweb, ds)}/rendered?window=40", timeout=30)
    assert bad.status_code == 400


def test_thumbnails(dicomweb: Dicomweb) -> None:
    ds = read_test_file("MR_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    series = f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    for url in (f"{_instance_url(dicomweb, ds)}/thumbnail", f"{series}/thumbnail"):
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, url
        assert max(Image.open(BytesIO(response.content)).size) <= 128, url


def test_thumbnail_parameters(dicomweb: Dicomweb) -> None:
    ds = read_test_file("MR_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    series = f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    png, jpeg = {"Accept": "image/png"}, {"Accept": "image/jpeg"}
    for url in (f"{_instance_url(dicomweb, ds)}/thumbnail", f"{series}/thumbnail"):
        small = requests.get(url, params={"viewport": "32,32"}, headers=png, timeout=30)
        assert small.status_code == 200, url
        assert Image.open(BytesIO(small.content)).size == (32, 32), url

        plain = requests.get(url, headers=png, timeout=30).content
        windowed = requests.get(url, params={"window": "100,50,linear"}, headers=png, timeout=30)
        assert windowed.status_code == 200, url
        assert windowed.content != plain, url

        best = requests.get(url, params={"quality": "100"}, headers=jpeg, timeout=30)
        worst = requests.get(url, params={"quality": "1"}, headers=jpeg, timeout=30)
        assert len(worst.content) < len(best.content), url

        for params in ({"viewport": "abc"}, {"quality": "0"}, {"window": "1"}):
            assert requests.get(url, params=params, timeout=30).status_code == 400, (url, params)


def test_rendered_frame_past_last(dicomweb: Dicomweb) -> None:
    ds = read_test_file("rtdose.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    base = f"{_instance_url(dicomweb, ds)}/frames"
    assert requests.get(f"{base}/2/rendered", timeout=30).status_code == 200
    assert requests.get(f"{base}/{ds.NumberOfFrames + 1}/rendered", timeout=30).status_code == 404


def test_metadata_etag_and_gzip(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    url = f"{dicomweb.url}/studies/{ds.StudyInstanceUID}/metadata"
    first = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Encoding"] == "gzip"
    assert first.json()[0]["00080018"]["Value"] == [ds.SOPInstanceUID]
    etag = first.headers["ETag"]
    again = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    other = requests.get(url, headers={"If-None-Match": '"other"'}, timeout=10)
    assert other.status_code == 200


def test_bulkdata_byte_ranges(dicomweb: Dicomweb) -> None:
    ds = read_test_file("CT_small.dcm")
    dicomweb.client.store_instances([ds])
    dicomweb.ingest_all()
    url = f"{_instance_url(dicomweb, ds)}/bulkdata/7FE00010"
    size = len(ds.PixelData)
    cases = {
        "bytes=0-9": (ds.PixelData[:10], f"bytes 0-9/{size}"),
        "bytes=100-": (ds.PixelData[100:], f"bytes 100-{size - 1}/{size}"),
        "bytes=-4": (ds.PixelData[-4:], f"bytes {size - 4}-{size - 1}/{size}"),
        "bytes=-999999": (ds.PixelData, f"bytes 0-{size - 1}/{size}"),
        f"bytes={size - 1}-999999": (ds.PixelData[-1:], f"bytes {size - 1}-{size - 1}/{size}"),
        "BYTES=0-0": (ds.PixelData[:1], f"bytes 0-0/{size}"),
    }
    for header, (expected, content_range) in cases.items():
        response = requests.get(url, headers={"Range": header}, timeout=10)
        assert response.status_code == 206, header
        assert response.headers["Content-Range"] == content_range, header
        parts = parse_multipart_related(response.headers["Content-Type"], response.content).parts
        assert [part.body for part in parts] == [expected], header
        assert parts[0].headers.get("content-range") == content_range, header
    # RFC 9110 14.2: a server ignores a Range of another unit, and may ignore an invalid one
    # or several ranges. Then the whole value is sent with 200.
    for header in ("items=0-1", "bytes=5-2", "bytes=abc", "bytes=0-1,5-6", "bytes=-", "bytes"):
        response = requests.get(url, headers={"Range": header}, timeout=10)
        assert response.status_code == 200, header
        assert "Content-Range" not in response.headers, header
        parts = parse_multipart_related(response.headers["Content-Type"], response.content).parts
        assert [part.body for part in parts] == [ds.PixelData], header
    for header in (f"bytes={size}-", "bytes=999999-1000000", "bytes=-0"):
        response = requests.get(url, headers={"Range": header}, timeout=10)
        assert response.status_code == 416, header
