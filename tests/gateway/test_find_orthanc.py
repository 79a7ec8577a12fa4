"""Orthanc 1.10.1 as a C-FIND SCU of the gateway, through its REST API.

Orthanc (``tests.peers.orthanc``) queries the gateway with ``POST /modalities/{name}/query``
and its answers are read back from ``/queries/{id}/answers``. Orthanc writes the identifiers
itself, with its own choice of keys and its Specific Character Set, so this checks that an
independent SCU gets the studies, series and instances that the index holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.services import Services
from tests.gateway.find_archive import LoadedStudy, load_studies
from tests.gateway.gateways import start_gateway
from tests.peers.orthanc import Modality, Orthanc, require_orthanc, running_orthanc

SITE = "find-orthanc"

Peers = tuple[Orthanc, list[LoadedStudy]]


@pytest.fixture(scope="module")
def peers(gateway_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    require_orthanc()
    studies = load_studies(Services(gateway_settings), SITE)
    config = AEConfig(open=True, default_site=SITE)
    with start_gateway(gateway_settings, config=config) as gateway:
        modalities = {"cirrus": Modality(DEFAULT_AE_TITLE, gateway.port)}
        with running_orthanc(Path(tmp_path_factory.mktemp("orthanc")), modalities) as orthanc:
            yield orthanc, studies


def _query(orthanc: Orthanc, level: str, query: dict[str, str]) -> list[dict[str, Any]]:
    """Run one C-FIND from Orthanc and return its answers as simplified tags."""
    created = orthanc.rest(
        "POST", "/modalities/cirrus/query", json={"Level": level, "Query": query}
    )
    path = created["Path"]
    answers = orthanc.rest("GET", f"{path}/answers")
    return [orthanc.rest("GET", f"{path}/answers/{index}/content?simplify") for index in answers]


def test_orthanc_finds_studies(peers: Peers) -> None:
    orthanc, studies = peers
    answers = _query(orthanc, "Study", {"PatientID": "P1", "StudyDate": "", "StudyInstanceUID": ""})
    expected = sorted(study.uid for study in studies if study.spec.patient_id == "P1")
    assert sorted(answer["StudyInstanceUID"] for answer in answers) == expected
    assert sorted(answer["StudyDate"] for answer in answers) == ["20240105", "20240320"]


def test_orthanc_finds_by_name_and_date(peers: Peers) -> None:
    orthanc, _ = peers
    answers = _query(
        orthanc, "Study", {"PatientName": "doe*", "StudyDate": "20240101-", "AccessionNumber": ""}
    )
    assert sorted(answer["AccessionNumber"] for answer in answers) == ["A100", "A101", "A300"]


def test_orthanc_finds_series(peers: Peers) -> None:
    orthanc, studies = peers
    study = studies[0]
    query = {"StudyInstanceUID": study.uid, "SeriesInstanceUID": "", "Modality": ""}
    answers = _query(orthanc, "Series", query)
    found = sorted((answer["SeriesInstanceUID"], answer["Modality"]) for answer in answers)
    assert found == sorted((uid, modality) for uid, modality, _ in study.series)


def test_orthanc_finds_instances(peers: Peers) -> None:
    orthanc, studies = peers
    series_uid, _, sops = studies[1].series[0]
    query = {
        "StudyInstanceUID": studies[1].uid,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": "",
    }
    answers = _query(orthanc, "Instance", query)
    assert sorted(answer["SOPInstanceUID"] for answer in answers) == sorted(sops)


def test_orthanc_finds_patients(peers: Peers) -> None:
    orthanc, _ = peers
    answers = _query(orthanc, "Patient", {"PatientID": "P*", "PatientName": ""})
    names = {answer["PatientID"]: answer["PatientName"] for answer in answers}
    assert names == {"P1": "Doe^Jane", "P2": "Roe^Richard", "P3": "doe^john"}
