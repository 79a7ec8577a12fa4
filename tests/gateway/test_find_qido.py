"""C-FIND and QIDO-RS give the same answers for the same matching keys.

One archive is searched both ways: QIDO-RS over HTTP through the DICOMweb handler, and C-FIND
through the gateway with pynetdicom. For each case the matched UIDs and the values of the
compared attributes must be equal.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from pydicom.datadict import tag_for_keyword

from cirrus.config import ResourceNames, Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from tests.gateway.find_archive import LoadedStudy, find, identifier, load_studies, matches
from tests.gateway.gateways import start_gateway
from tests.integration.dicomweb_stack import Stack, start_stack

STUDY_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances")
IMAGE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")


@dataclass(frozen=True)
class Case:
    """One search: the matching keys, given to QIDO-RS as text and to C-FIND as values."""

    name: str
    keys: dict[str, str | list[str]]


STUDY_CASES = [
    Case("patient id", {"PatientID": "P1"}),
    Case("unknown patient", {"PatientID": "P9"}),
    Case("name prefix", {"PatientName": "DOE*"}),
    Case("name exact", {"PatientName": "doe^john"}),
    Case("name inner wildcard", {"PatientName": "*ich*"}),
    Case("name one character", {"PatientName": "Roe^Richar?"}),
    Case("date range", {"StudyDate": "20240101-20240331"}),
    Case("date up to", {"StudyDate": "-20231231"}),
    Case("date from", {"StudyDate": "20240601-"}),
    Case("date single", {"StudyDate": "20240320"}),
    Case("accession wildcard", {"AccessionNumber": "A10*"}),
    Case("accession exact", {"AccessionNumber": "A300"}),
    Case("description unindexed", {"StudyDescription": "*CT*"}),
    Case("modality", {"ModalitiesInStudy": "CT"}),
    Case("modality list", {"ModalitiesInStudy": ["MR", "SR"]}),
    Case("patient and date", {"PatientID": "P1", "StudyDate": "20240320"}),
    Case("name and modality", {"PatientName": "Roe^Richard", "ModalitiesInStudy": "CT"}),
    Case("universal", {}),
]
SERIES_CASES = [
    Case("modality", {"Modality": "CT"}),
    Case("series number", {"SeriesNumber": "2"}),
    Case("universal", {}),
]
IMAGE_CASES = [
    Case("instance number", {"InstanceNumber": "2"}),
    Case("universal", {}),
]

Searched = tuple[Stack, int, list[LoadedStudy]]


@pytest.fixture(scope="module")
def searched(moto_server: MotoProcess) -> Iterator[Searched]:
    names = ResourceNames(deployment=f"fq{uuid.uuid4().hex[:10]}")
    settings = create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))
    stack = start_stack(settings)
    try:
        studies = load_studies(stack.services, stack.site)
        config = AEConfig(open=True, default_site=stack.site)
        with start_gateway(settings, config=config) as gateway:
            yield stack, gateway.port, studies
    finally:
        stack.server.shutdown()


def _qido(url: str, keys: dict[str, str | list[str]], returned: tuple[str, ...]) -> list[Any]:
    params = {name: ",".join(v) if isinstance(v, list) else v for name, v in keys.items()}
    params["includefield"] = ",".join(returned)
    response = requests.get(url, params=params, timeout=30)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


def _normalized(matches_json: list[dict[str, Any]], returned: tuple[str, ...]) -> list[Any]:
    """Return the compared attributes of each match, sorted by the first (the unique key)."""
    tags = [f"{tag_for_keyword(keyword):08X}" for keyword in returned]
    rows = [[match.get(tag, {}).get("Value", []) for tag in tags] for match in matches_json]
    return sorted(rows, key=lambda row: str(row[0]))


def _cfind(port: int, level: str, keys: dict[str, Any], returned: tuple[str, ...]) -> list[Any]:
    query = identifier(level, **{keyword: None for keyword in returned})
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return [ds.to_json_dict() for ds in matches(find(port, query))]


@pytest.mark.parametrize("case", STUDY_CASES, ids=[case.name for case in STUDY_CASES])
def test_study_search_same(searched: Searched, case: Case) -> None:
    stack, port, _ = searched
    qido = _qido(f"{stack.url}/studies", case.keys, STUDY_KEYS)
    cfind = _cfind(port, "STUDY", case.keys, STUDY_KEYS)
    assert _normalized(cfind, STUDY_KEYS) == _normalized(qido, STUDY_KEYS)


def test_study_cases_find_something(searched: Searched) -> None:
    # The comparison means little if most cases match nothing.
    stack, _, _ = searched
    found = [bool(_qido(f"{stack.url}/studies", case.keys, STUDY_KEYS)) for case in STUDY_CASES]
    assert sum(found) == len(STUDY_CASES) - 1


@pytest.mark.parametrize("case", SERIES_CASES, ids=[case.name for case in SERIES_CASES])
@pytest.mark.parametrize("study_index", [0, 3])
def test_series_search_same(searched: Searched, case: Case, study_index: int) -> None:
    stack, port, studies = searched
    study = studies[study_index].uid
    qido = _qido(f"{stack.url}/studies/{study}/series", case.keys, SERIES_KEYS)
    cfind = _cfind(port, "SERIES", {"StudyInstanceUID": study, **case.keys}, SERIES_KEYS)
    assert _normalized(cfind, SERIES_KEYS) == _normalized(qido, SERIES_KEYS)
    assert qido or case.name == "series number"


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[case.name for case in IMAGE_CASES])
def test_image_search_same(searched: Searched, case: Case) -> None:
    stack, port, studies = searched
    study = studies[1]
    series = study.series[0][0]
    url = f"{stack.url}/studies/{study.uid}/series/{series}/instances"
    qido = _qido(url, case.keys, IMAGE_KEYS)
    keys = {"StudyInstanceUID": study.uid, "SeriesInstanceUID": series, **case.keys}
    cfind = _cfind(port, "IMAGE", keys, IMAGE_KEYS)
    assert qido
    assert _normalized(cfind, IMAGE_KEYS) == _normalized(qido, IMAGE_KEYS)
