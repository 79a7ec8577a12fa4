"""DICOMweb access over signed HTTP: each principal reaches only its sites and actions.

Two sites, north and south, hold studies stored through the API by their own principals.
Study dates interleave the two sites, so that a merged search must order across sites, and one
Study Instance UID is stored in both, with the same series and SOP Instance UIDs but another
Series Description in each.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from pynamodb.connection.base import Connection

from cirrus.access import AccessPolicy
from cirrus.audit import AuditAction, AuditEvent, AuditOutcome
from cirrus.config import Settings
from cirrus.local.moto_process import MotoProcess
from cirrus.storage.objects import ObjectStore
from tests.integration.test_access_support import (
    ACCESS_DOCUMENT,
    BOTH_STORE,
    NORTH_ALL,
    NORTH_MODALITY,
    NORTH_QUERY,
    NORTH_READER,
    SOUTH_ALL,
    STRANGER,
    TELERADIOLOGY,
    AccessStack,
    new_deployment,
    new_study,
    start_access_stack,
    stow_body,
)

POLICY = AccessPolicy.from_json(ACCESS_DOCUMENT)
DICOM_JSON = {"Accept": "application/dicom+json"}


@dataclass
class Study:
    """One stored study of one instance: its UIDs and the site it was stored into."""

    site: str
    study: str
    series: str
    sop: str
    description: str

    @classmethod
    def of(cls, site: str, ds: pydicom.Dataset) -> Study:
        uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        return cls(site, *uids, str(ds.SeriesDescription))

    @property
    def instance_path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"


@dataclass
class Archive:
    stack: AccessStack
    north: Study
    south: Study
    north_late: Study
    south_late: Study
    shared_north: Study
    shared_south: Study

    @property
    def merged_order(self) -> list[Study]:
        """Every study in StudyDate order; the shared UID's north copy before its south copy."""
        return [
            self.north,
            self.south,
            self.north_late,
            self.south_late,
            self.shared_north,
            self.shared_south,
        ]


def dated_study(date: str, description: str, study: str | None = None) -> pydicom.Dataset:
    (ds,) = new_study(study=study)
    ds.StudyDate = date
    ds.SeriesDescription = description
    return ds


def store(stack: AccessStack, principal: str, path: str, ds: pydicom.Dataset) -> None:
    response = stack.client(principal).store(path, [ds])
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def settings(moto_server: MotoProcess) -> Settings:
    return new_deployment(moto_server)


@pytest.fixture(scope="module")
def archive(settings: Settings) -> Iterator[Archive]:
    stack = start_access_stack(settings, POLICY)
    datasets = {
        "north": dated_study("20240101", "north first"),
        "south": dated_study("20240102", "south first"),
        "north_late": dated_study("20240103", "north late"),
        "south_late": dated_study("20240104", "south late"),
    }
    shared_north = dated_study("20240105", "shared north copy")
    shared_south = copy.deepcopy(shared_north)
    shared_south.SeriesDescription = "shared south copy"

    store(stack, NORTH_MODALITY, "/studies", datasets["north"])
    store(stack, SOUTH_ALL, "/studies", datasets["south"])
    store(stack, NORTH_ALL, "/studies", datasets["north_late"])
    store(stack, SOUTH_ALL, "/sites/south/studies", datasets["south_late"])
    store(stack, NORTH_ALL, "/studies", shared_north)
    store(stack, SOUTH_ALL, "/studies", shared_south)
    assert stack.index() == 6
    stack.audit.take()
    yield Archive(
        stack,
        Study.of("north", datasets["north"]),
        Study.of("south", datasets["south"]),
        Study.of("north", datasets["north_late"]),
        Study.of("south", datasets["south_late"]),
        Study.of("north", shared_north),
        Study.of("south", shared_south),
    )
    stack.server.shutdown()


def retrieve_paths(study: Study) -> list[str]:
    """Return the path of every WADO-RS resource of a one-instance study."""
    series = f"/studies/{study.study}/series/{study.series}"
    instance = study.instance_path
    return [
        f"/studies/{study.study}",
        f"/studies/{study.study}/metadata",
        f"/studies/{study.study}/rendered",
        series,
        f"{series}/metadata",
        f"{series}/rendered",
        f"{series}/thumbnail",
        instance,
        f"{instance}/metadata",
        f"{instance}/frames/1",
        f"{instance}/frames/1/rendered",
        f"{instance}/bulkdata/7FE00010",
        f"{instance}/rendered",
        f"{instance}/thumbnail",
    ]


def query_paths(study: Study) -> list[str]:
    """Return QIDO-RS searches that each match ``study`` in its own site."""
    return [
        f"/studies?StudyInstanceUID={study.study}",
        f"/series?StudyInstanceUID={study.study}",
        f"/instances?SOPInstanceUID={study.sop}",
        f"/studies/{study.study}/series",
        f"/studies/{study.study}/instances",
        f"/studies/{study.study}/series/{study.series}/instances",
    ]


def unknown_like(study: Study) -> Study:
    """Return a study with the same site and shape whose UIDs no site holds."""
    return Study(study.site, generate_uid(), generate_uid(), generate_uid(), "none")


def with_uids_of(text: str, source: Study, target: Study) -> str:
    """Return ``text`` with the UIDs of ``source`` replaced by those of ``target``."""
    for old, new in ((source.study, target.study), (source.series, target.series)):
        text = text.replace(old, new)
    return text.replace(source.sop, target.sop)


def only_event(stack: AccessStack) -> AuditEvent:
    events = stack.audit.take()
    assert len(events) == 1, events
    return events[0]


# Retrieve


def test_own_site_retrieves_every_resource(archive: Archive) -> None:
    client = archive.stack.client(NORTH_ALL)
    for path in retrieve_paths(archive.north):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:200])

    events = archive.stack.audit.take()
    assert len(events) == len(retrieve_paths(archive.north))
    for event in events:
        assert event.action == AuditAction.RETRIEVE
        assert event.outcome == AuditOutcome.SUCCESS
        assert event.site == "north"
        assert event.actor.principal == NORTH_ALL
        assert [access.study for access in event.studies] == [archive.north.study]


@pytest.mark.parametrize("prefix", ["", "/sites/south"])
def test_other_site_retrieve_not_found(archive: Archive, prefix: str) -> None:
    client = archive.stack.client(NORTH_ALL)
    south = archive.south
    unknown = unknown_like(south)
    for path in retrieve_paths(south):
        response = client.get(f"{prefix}{path}")
        event = only_event(archive.stack)
        missing = client.get(with_uids_of(path, south, unknown))
        archive.stack.audit.take()

        assert response.status_code == 404, (path, response.text[:200])
        assert missing.status_code == 404, path
        # The same body, word for word, as for UIDs that no site holds.
        assert with_uids_of(response.text, south, unknown) == missing.text, path
        assert "error" in response.json()
        assert event.action == AuditAction.RETRIEVE
        assert event.outcome == AuditOutcome.MINOR_FAILURE
        # The record names the study asked for, though nothing of it was read.
        assert [access.study for access in event.studies] == [south.study]
        if prefix:
            assert event.site == "south"
            assert event.detail == "no grant for retrieve on the site named"
        else:
            # Looked up in north, the one site it may retrieve from, and not found there.
            assert event.site == "north"


def test_other_site_prefix_audited_as_denied(archive: Archive) -> None:
    response = archive.stack.client(NORTH_ALL).get(f"/sites/south/studies/{archive.south.study}")

    assert response.status_code == 404
    event = only_event(archive.stack)
    assert event.site == "south"
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.detail == "no grant for retrieve on the site named"
    assert [access.study for access in event.studies] == [archive.south.study]


def test_query_only_cannot_retrieve(archive: Archive) -> None:
    client = archive.stack.client(NORTH_QUERY)

    assert client.get("/studies", headers=DICOM_JSON).status_code == 200
    archive.stack.audit.take()
    for path in retrieve_paths(archive.north):
        response = client.get(path)
        assert response.status_code == 403, path
        assert response.json() == {
            "error": "access denied: this caller has no grant for retrieve on any site"
        }

    events = archive.stack.audit.take()
    assert len(events) == len(retrieve_paths(archive.north))
    for event in events:
        assert event.action == AuditAction.RETRIEVE
        assert event.outcome == AuditOutcome.MINOR_FAILURE
        assert event.site is None
        assert event.actor.principal == NORTH_QUERY
        assert event.detail == "no grant for retrieve"
        assert [access.study for access in event.studies] == [archive.north.study]


def test_query_only_cannot_store_or_delete(archive: Archive) -> None:
    client = archive.stack.client(NORTH_QUERY)

    stored = client.store("/studies", new_study())
    deleted = client.request("DELETE", f"/studies/{archive.north.study}")

    assert stored.status_code == 403
    assert "store" in stored.json()["error"]
    assert deleted.status_code == 403
    assert "delete" in deleted.json()["error"]
    assert [event.action for event in archive.stack.audit.take()] == [
        AuditAction.STORE,
        AuditAction.DELETE,
    ]


def test_unknown_principal_denied(archive: Archive) -> None:
    response = archive.stack.client(STRANGER).get("/studies")

    assert response.status_code == 403
    assert response.json() == {
        "error": "access denied: this caller has no grant for query on any site"
    }
    event = only_event(archive.stack)
    assert event.actor.principal == STRANGER
    assert event.action == AuditAction.QUERY
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.site is None


# Query


@pytest.mark.parametrize("prefix", ["", "/sites/south"])
def test_other_site_query_empty(archive: Archive, prefix: str) -> None:
    client = archive.stack.client(NORTH_ALL)
    for path in query_paths(archive.south):
        response = client.get(f"{prefix}{path}", headers=DICOM_JSON)
        assert response.status_code == 204, (path, response.text[:200])
        assert response.content == b""
    archive.stack.audit.take()


def test_other_site_query_audited_as_denied(archive: Archive) -> None:
    archive.stack.audit.take()

    response = archive.stack.client(NORTH_ALL).get("/sites/south/studies", headers=DICOM_JSON)

    assert response.status_code == 204
    event = only_event(archive.stack)
    assert event.action == AuditAction.QUERY
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.site == "south"
    assert event.detail == "no grant for query on the site named"


@pytest.mark.parametrize("site", ["South", "south%00", "north,south", "a%0Ab", "x" * 40])
def test_invalid_site_name_not_audited(archive: Archive, site: str) -> None:
    """A site name that no site can have is kept out of the trail, whatever text it is."""
    archive.stack.audit.take()

    response = archive.stack.client(NORTH_ALL).get(f"/sites/{site}/studies/{archive.north.study}")

    assert response.status_code == 404
    event = only_event(archive.stack)
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.site is None


def test_own_site_query_matches(archive: Archive) -> None:
    client = archive.stack.client(NORTH_ALL)
    for path in query_paths(archive.north):
        response = client.get(path, headers=DICOM_JSON)
        assert response.status_code == 200, path
        assert len(response.json()) == 1, path


def test_query_audited_with_keys_only(archive: Archive) -> None:
    archive.stack.audit.take()

    response = archive.stack.client(NORTH_READER).get(
        "/studies", params={"PatientName": "CompressedSamples^CT1", "limit": "10"}
    )

    assert response.status_code == 200
    event = only_event(archive.stack)
    assert event.action == AuditAction.QUERY
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.site == "north"
    assert event.actor.principal == NORTH_READER
    assert event.query_keys == ("PatientName",)
    assert "CompressedSamples" not in repr(event)
    studies = {access.study for access in event.studies}
    assert studies == {archive.north.study, archive.north_late.study, archive.shared_north.study}


def retrieve_urls(response: requests.Response) -> list[str]:
    return [match["00081190"]["Value"][0] for match in response.json()]


def test_multi_site_reader_sees_merged_result(archive: Archive) -> None:
    response = archive.stack.client(TELERADIOLOGY).get("/studies", headers=DICOM_JSON)

    assert response.status_code == 200
    url = archive.stack.url
    assert retrieve_urls(response) == [
        f"{url}/sites/{study.site}/studies/{study.study}" for study in archive.merged_order
    ]
    events = archive.stack.audit.take()
    assert [event.site for event in events] == ["north", "south"]
    assert {access.study for access in events[1].studies} == {
        archive.south.study,
        archive.south_late.study,
        archive.shared_south.study,
    }


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_multi_site_paging_no_gaps_or_repeats(archive: Archive, limit: int) -> None:
    client = archive.stack.client(TELERADIOLOGY)
    pages = []
    offset = 0
    while True:
        response = client.get(
            "/studies", params={"limit": str(limit), "offset": str(offset)}, headers=DICOM_JSON
        )
        if response.status_code == 204:
            break
        assert response.status_code == 200
        page = retrieve_urls(response)
        assert 0 < len(page) <= limit
        more = offset + limit < len(archive.merged_order)
        warnings = response.headers.get("Warning", "")
        assert (f"offset={offset + limit}" in warnings) == more, (offset, warnings)
        pages.append(page)
        offset += limit

    merged = [url for page in pages for url in page]
    url = archive.stack.url
    assert merged == [
        f"{url}/sites/{study.site}/studies/{study.study}" for study in archive.merged_order
    ]
    assert len(set(merged)) == len(merged)
    archive.stack.audit.take()


def test_multi_site_series_search_merged(archive: Archive) -> None:
    response = archive.stack.client(TELERADIOLOGY).get(
        "/series", params={"StudyDate": "20240102-20240105"}, headers=DICOM_JSON
    )

    assert response.status_code == 200
    descriptions = [match["0008103E"]["Value"][0] for match in response.json()]
    assert descriptions == [
        "south first",
        "north late",
        "south late",
        "shared north copy",
        "shared south copy",
    ]
    archive.stack.audit.take()


def test_prefix_narrows_multi_site_query(archive: Archive) -> None:
    response = archive.stack.client(TELERADIOLOGY).get("/sites/south/studies", headers=DICOM_JSON)

    assert response.status_code == 200
    url = f"{archive.stack.url}/sites/south"
    assert retrieve_urls(response) == [
        f"{url}/studies/{study.study}" for study in archive.merged_order if study.site == "south"
    ]
    assert only_event(archive.stack).site == "south"


# One Study Instance UID in two sites


def series_description(response: requests.Response) -> str:
    assert response.status_code == 200, response.text[:200]
    (metadata,) = response.json()
    return str(metadata["0008103E"]["Value"][0])


def test_same_uid_two_studies_in_query(archive: Archive) -> None:
    shared = archive.shared_north

    response = archive.stack.client(TELERADIOLOGY).get(
        "/studies", params={"StudyInstanceUID": shared.study}, headers=DICOM_JSON
    )

    url = archive.stack.url
    assert retrieve_urls(response) == [
        f"{url}/sites/north/studies/{shared.study}",
        f"{url}/sites/south/studies/{shared.study}",
    ]
    for match in response.json():
        assert match["00201208"]["Value"] == [1]
    archive.stack.audit.take()


def test_same_uid_retrieved_from_first_granted_site(archive: Archive) -> None:
    path = f"{archive.shared_north.instance_path}/metadata"
    telerad = archive.stack.client(TELERADIOLOGY)

    assert series_description(telerad.get(path)) == "shared north copy"
    assert series_description(telerad.get(f"/sites/south{path}")) == "shared south copy"
    assert series_description(telerad.get(f"/sites/north{path}")) == "shared north copy"
    assert series_description(archive.stack.client(SOUTH_ALL).get(path)) == "shared south copy"
    sites = [event.site for event in archive.stack.audit.take()]
    assert sites == ["north", "south", "north", "south"]


def test_same_uid_metadata_names_prefix(archive: Archive) -> None:
    path = f"/sites/south/studies/{archive.shared_south.study}/metadata"

    response = archive.stack.client(TELERADIOLOGY).get(path)

    (metadata,) = response.json()
    assert metadata["0008103E"]["Value"] == ["shared south copy"]
    bulk = metadata["7FE00010"]["BulkDataURI"]
    assert bulk.startswith(f"{archive.stack.url}/sites/south/studies/")
    archive.stack.audit.take()


# Store


def test_store_into_other_site_denied(archive: Archive) -> None:
    before = archive.stack.instance_keys("south")
    client = archive.stack.client(NORTH_MODALITY)
    datasets = new_study()
    study = datasets[0].StudyInstanceUID

    for path in ("/sites/south/studies", f"/sites/south/studies/{study}", "/sites/south/uploads"):
        if path.endswith("uploads"):
            response = client.request("POST", path)
        else:
            response = client.store(path, datasets)

        assert response.status_code == 403, path
        assert response.json() == {
            "error": "access denied: this caller has no grant for store on the site it named"
        }
        event = only_event(archive.stack)
        assert event.action == AuditAction.STORE
        assert event.site == "south"
        assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert archive.stack.instance_keys("south") == before


def test_store_audited_with_instances(archive: Archive) -> None:
    datasets = new_study(("CT_small.dcm", "MR_small.dcm"))
    study = datasets[0].StudyInstanceUID

    response = archive.stack.client(NORTH_MODALITY).store("/studies", datasets)

    assert response.status_code == 200
    keys = archive.stack.instance_keys("north")
    for ds in datasets:
        assert any(key.endswith(f"/instances/{ds.SOPInstanceUID}.dcm") for key in keys)
    event = only_event(archive.stack)
    assert event.action == AuditAction.STORE
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.site == "north"
    assert event.actor.principal == NORTH_MODALITY
    (access,) = event.studies
    assert access.study == study
    assert set(access.instances) == {ds.SOPInstanceUID for ds in datasets}
    assert dict(access.sop_classes) == {ds.SOPClassUID: 1 for ds in datasets}


def test_several_store_sites_need_prefix(archive: Archive) -> None:
    client = archive.stack.client(BOTH_STORE)
    datasets = new_study()

    unnamed = client.store("/studies", datasets)
    named = client.store("/sites/south/studies", datasets)

    assert unnamed.status_code == 400
    assert "/sites/north/studies" in unnamed.json()["error"]
    assert named.status_code == 200
    url = named.json()["00081190"]["Value"][0]
    assert url == f"{archive.stack.url}/sites/south/studies/{datasets[0].StudyInstanceUID}"
    sop = datasets[0].SOPInstanceUID
    assert any(sop in key for key in archive.stack.instance_keys("south"))
    assert not any(sop in key for key in archive.stack.instance_keys("north"))
    events = archive.stack.audit.take()
    assert [(event.outcome, event.site) for event in events] == [
        (AuditOutcome.MINOR_FAILURE, None),
        (AuditOutcome.SUCCESS, "south"),
    ]


def test_upload_needs_store_grant(archive: Archive) -> None:
    denied = archive.stack.client(NORTH_READER).request("POST", "/uploads")
    created = archive.stack.client(NORTH_MODALITY).request("POST", "/uploads")

    assert denied.status_code == 403
    assert created.status_code == 201
    # Only the denial: an upload stores nothing until its store request, which is audited.
    assert [event.outcome for event in archive.stack.audit.take()] == [AuditOutcome.MINOR_FAILURE]


# Delete


@pytest.mark.parametrize("prefix", ["", "/sites/south"])
def test_delete_other_site_not_found(archive: Archive, prefix: str) -> None:
    south = archive.south
    before = archive.stack.instance_keys("south")
    client = archive.stack.client(NORTH_ALL)
    unknown = unknown_like(south)
    paths = (
        f"/studies/{south.study}",
        f"/studies/{south.study}/series/{south.series}",
        south.instance_path,
    )
    for path in paths:
        response = client.request("DELETE", f"{prefix}{path}")
        event = only_event(archive.stack)
        missing = client.request("DELETE", with_uids_of(path, south, unknown))
        archive.stack.audit.take()

        assert response.status_code == 404, path
        assert with_uids_of(response.text, south, unknown) == missing.text
        assert event.action == AuditAction.DELETE
        assert event.outcome == AuditOutcome.MINOR_FAILURE
        assert event.site == ("south" if prefix else "north")
    assert archive.stack.instance_keys("south") == before
    assert archive.stack.audit.deletions == []


def test_open_stack_serves_unsigned(settings: Settings) -> None:
    stack = start_access_stack(settings, None)
    try:
        datasets = new_study()
        study = datasets[0].StudyInstanceUID
        body, content_type = stow_body(datasets)

        stored = requests.post(
            f"{stack.url}/studies", data=body, headers={"Content-Type": content_type}, timeout=30
        )
        stack.index()
        found = requests.get(f"{stack.url}/studies/{study}/metadata", timeout=30)
        deleted = requests.delete(f"{stack.url}/studies/{study}", timeout=30)

        assert stored.status_code == 200
        assert found.status_code == 200
        assert found.json()[0]["0020000D"]["Value"] == [study]
        assert deleted.status_code == 204
        events = [(e.action, e.site, e.actor.principal) for e in stack.audit.take()]
        assert events == [
            (AuditAction.STORE, "default", None),
            (AuditAction.RETRIEVE, "default", None),
        ]
        (deletion,) = stack.audit.deletions
        assert deletion.site == "default"
        assert deletion.study == study
    finally:
        stack.server.shutdown()


def test_delete_same_uid_removes_first_site_only(moto_server: MotoProcess) -> None:
    settings = new_deployment(moto_server)
    stack = start_access_stack(settings, POLICY)
    try:
        north = dated_study("20240105", "north copy")
        south = copy.deepcopy(north)
        south.SeriesDescription = "south copy"
        store(stack, NORTH_ALL, "/studies", north)
        store(stack, SOUTH_ALL, "/studies", south)
        stack.index()
        stack.audit.take()
        study = north.StudyInstanceUID
        telerad = stack.client(TELERADIOLOGY)

        deleted = stack.client(NORTH_ALL).request("DELETE", f"/studies/{study}")

        assert deleted.status_code == 204
        assert stack.instance_keys("north") == []
        assert len(stack.instance_keys("south")) == 1
        (deletion,) = stack.audit.deletions
        assert deletion.site == "north"
        assert deletion.actor.principal == NORTH_ALL
        # The deletion record, written before the delete, is the audit record of its success.
        assert stack.audit.take() == []
        left = telerad.get("/studies", params={"StudyInstanceUID": study}, headers=DICOM_JSON)
        assert retrieve_urls(left) == [f"{stack.url}/sites/south/studies/{study}"]
        metadata = telerad.get(f"/studies/{study}/metadata")
        assert series_description(metadata) == "south copy"
    finally:
        stack.server.shutdown()


@dataclass
class KeySpy:
    """The index partitions and archive keys that requests read, recorded as they are read."""

    partitions: list[str]
    objects: list[str]

    def take(self) -> tuple[list[str], list[str]]:
        read = (list(self.partitions), list(self.objects))
        self.partitions.clear()
        self.objects.clear()
        return read


@pytest.fixture
def key_spy(monkeypatch: pytest.MonkeyPatch) -> KeySpy:
    spy = KeySpy([], [])

    def recorded(original: Any, keys: list[str]) -> Any:
        def call(self: Any, first: str, key: str, *args: Any, **kwargs: Any) -> Any:
            keys.append(key)
            return original(self, first, key, *args, **kwargs)

        return call

    def recorded_object(original: Any, keys: list[str]) -> Any:
        def call(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            keys.append(key)
            return original(self, key, *args, **kwargs)

        return call

    for name in ("query", "get_item"):
        original = getattr(Connection, name)
        monkeypatch.setattr(Connection, name, recorded(original, spy.partitions))
    for name in ("get", "get_range", "size", "list_keys"):
        original = getattr(ObjectStore, name)
        monkeypatch.setattr(ObjectStore, name, recorded_object(original, spy.objects))
    return spy


def test_requests_read_only_granted_site_keys(archive: Archive, key_spy: KeySpy) -> None:
    client = archive.stack.client(NORTH_ALL)
    south = archive.south
    for prefix in ("", "/sites/south"):
        for path in query_paths(south):
            assert client.get(f"{prefix}{path}", headers=DICOM_JSON).status_code == 204
        for path in retrieve_paths(south):
            assert client.get(f"{prefix}{path}").status_code == 404
        assert client.request("DELETE", f"{prefix}/studies/{south.study}").status_code == 404
    assert client.get("/studies", headers=DICOM_JSON).status_code == 200

    partitions, objects = key_spy.take()
    assert partitions, "the spy saw no index reads"
    assert [key for key in partitions if not key.startswith("north#")] == []
    assert [key for key in objects if not key.startswith("sites/north/")] == []

    # The spy sees other sites' reads where they are allowed.
    archive.stack.client(TELERADIOLOGY).get("/studies", headers=DICOM_JSON)
    partitions, _ = key_spy.take()
    assert {key.split("#", 1)[0] for key in partitions} == {"north", "south"}
    archive.stack.audit.take()
