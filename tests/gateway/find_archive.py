"""An archive for the C-FIND tests: studies ingested as in production, and SCUs that query it.

``load_studies`` stores copies of CT_small through the write path and indexes them with the
ingest handler, so the gateway reads the same records as QIDO-RS. ``find`` sends one C-FIND
with pynetdicom and ``findscu`` runs dcmtk's, each returning every response.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from cirrus.config import DEFAULT_AE_TITLE
from cirrus.local.moto_process import LOOPBACK
from cirrus.query.identifier import STUDY_ROOT_FIND
from cirrus.services import Services
from tests.gateway.retrieves import archive
from tests.gateway.scu import run_dcmtk
from tests.pydicom_files import bundled


@dataclass(frozen=True)
class StudySpec:
    patient_id: str
    patient_name: str
    study_date: str
    accession: str
    description: str
    modalities: tuple[str, ...]
    instances_per_series: int


STUDIES = (
    StudySpec("P1", "Doe^Jane", "20240105", "A100", "Chest CT", ("CT", "SR"), 2),
    StudySpec("P1", "Doe^Jane", "20240320", "A101", "Brain MR", ("MR",), 3),
    StudySpec("P2", "Roe^Richard", "20231231", "A200", "Abdomen", ("CT",), 1),
    StudySpec("P3", "doe^john", "20240601", "A300", "Chest CT follow-up", ("CT", "CT"), 1),
)


@dataclass
class LoadedStudy:
    spec: StudySpec
    uid: str
    series: list[tuple[str, str, list[str]]] = field(default_factory=list)  # uid, modality, SOPs


def load_studies(services: Services, site: str) -> list[LoadedStudy]:
    """Ingest ``STUDIES`` into ``site``.

    Patient P2's series carry two request items, and P3's instances have no
    TimezoneOffsetFromUTC (CT_small's is -0500).
    """
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    loaded = []
    for spec in STUDIES:
        study = LoadedStudy(spec, generate_uid())
        for number, modality in enumerate(spec.modalities, start=1):
            series_uid = generate_uid()
            sops = []
            for instance in range(spec.instances_per_series):
                ds = copy.deepcopy(template)
                ds.PatientID, ds.PatientName = spec.patient_id, spec.patient_name
                ds.StudyDate, ds.AccessionNumber = spec.study_date, spec.accession
                ds.StudyDescription = spec.description
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, series_uid
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, number, instance + 1
                if spec.patient_id == "P3":
                    del ds.TimezoneOffsetFromUTC
                if spec.patient_id == "P2":
                    ds.RequestAttributesSequence = [
                        _request_item("S7", "R7"),
                        _request_item("S8", "R8"),
                    ]
                archive(services, site, ds)
                sops.append(ds.SOPInstanceUID)
            study.series.append((series_uid, modality, sops))
        loaded.append(study)
    return loaded


def _request_item(step: str, procedure: str) -> Dataset:
    item = Dataset()
    item.ScheduledProcedureStepID, item.RequestedProcedureID = step, procedure
    return item


def identifier(level: str, **keys: object) -> Dataset:
    """Build an Identifier from keywords; None stands for a return key without a value."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, "" if value is None else value)
    return ds


@contextmanager
def association(
    port: int, calling_ae: str = "FINDSCU", models: tuple[str, ...] = (STUDY_ROOT_FIND,)
) -> Iterator[Association]:
    ae = AE(calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for model in models:
        ae.add_requested_context(model, ImplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=DEFAULT_AE_TITLE)
    assert assoc.is_established, "the gateway did not accept the association"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def find(
    port: int, query: Dataset, model: str = STUDY_ROOT_FIND, calling_ae: str = "FINDSCU"
) -> list[tuple[Dataset, Dataset | None]]:
    """Send one C-FIND and return every (status, identifier) response, the final one last."""
    with association(port, calling_ae, (model,)) as assoc:
        return list(assoc.send_c_find(query, model))


def matches(responses: list[tuple[Dataset, Dataset | None]]) -> list[Dataset]:
    """Return the identifiers of the Pending responses, after checking the final Success."""
    *pending, (final, _) = responses
    assert final.Status == 0x0000, f"final status 0x{final.Status:04X}"
    found = []
    for status, ds in pending:
        assert status.Status in (0xFF00, 0xFF01), f"status 0x{status.Status:04X}"
        assert ds is not None
        found.append(ds)
    return found


def findscu(
    port: int, model_option: str, keys: list[str], out: Path, *options: str
) -> tuple[str, list[Dataset]]:
    """Run findscu with ``-k`` keys, extracting each response; return its output and them."""
    out.mkdir(parents=True, exist_ok=True)
    args = [option for key in keys for option in ("-k", key)]
    result = run_dcmtk(
        "findscu",
        model_option,
        *options,
        "-aet",
        "FINDSCU",
        "-aec",
        DEFAULT_AE_TITLE,
        "-X",
        "-od",
        str(out),
        *args,
        LOOPBACK,
        str(port),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"findscu failed with {result.returncode}: {output}"
    responses: list[Dataset] = [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    return output, responses
