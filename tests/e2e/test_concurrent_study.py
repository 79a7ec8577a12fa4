"""16 associations store into one study at once; the study's counts stay exact.

``cirrus dev`` runs in a child process, so the instances take the real path. The gateway
writes them to the data folder and the local store notifies the ingest queue on moto. The
poller's ingest then updates the study and series records in DynamoDB transactions. All 16
associations are open before any of them sends, so their requests and their index writes
overlap. Some associations share a series and others have one of their own, with four
modalities in the study.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from tests.e2e.conftest import RunningStack
from tests.pydicom_files import bundled

ASSOCIATIONS = 16
INSTANCES_PER_ASSOCIATION = 6
INDEXED_TIMEOUT_SECONDS = 90
NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"
MODALITIES_IN_STUDY = "00080061"
SERIES_INSTANCE_UID = "0020000E"
# The seed of each association, by modality: CT and MR images, a secondary capture (OT) and
# an RT plan, sent in explicit VR little endian. Associations 0-5 share one CT series and 6-9
# one MR series, and the other six have a series each.
SEEDS = {
    "CT": "CT_small.dcm",
    "MR": "MR_small.dcm",
    "OT": "image_dfl.dcm",
    "RTPLAN": "rtplan.dcm",
}
pytestmark = pytest.mark.timeout(240)


@dataclass(frozen=True)
class Sender:
    modality: str
    series: str
    datasets: list[Dataset]


def plan_senders(study: str) -> list[Sender]:
    shared = {"CT": generate_uid(), "MR": generate_uid()}
    modalities = ["CT"] * 6 + ["MR"] * 4 + ["OT", "RTPLAN", "CT", "MR", "OT", "RTPLAN"]
    senders = []
    for index, modality in enumerate(modalities):
        series = shared[modality] if index < 10 else generate_uid()
        datasets = []
        for number in range(INSTANCES_PER_ASSOCIATION):
            ds = pydicom.dcmread(bundled(SEEDS[modality]))
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = index * INSTANCES_PER_ASSOCIATION + number + 1
            datasets.append(ds)
        senders.append(Sender(modality, series, datasets))
    assert len(senders) == ASSOCIATIONS
    return senders


def send_all(port: int, senders: list[Sender]) -> list[list[int]]:
    """Open one association per sender, let all send at once and return the statuses."""
    ready = threading.Barrier(len(senders))
    statuses: list[list[int]] = [[] for _ in senders]
    errors: list[BaseException] = []

    def run(index: int, sender: Sender) -> None:
        ae = AE("CONCURRENT")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        # pynetdicom encodes each data set in the accepted syntax.
        ae.add_requested_context(sender.datasets[0].SOPClassUID, ExplicitVRLittleEndian)
        try:
            assoc = ae.associate("127.0.0.1", port, ae_title="CIRRUS")
            ready.wait(timeout=60)
            assert assoc.is_established
            for ds in sender.datasets:
                statuses[index].append(int(assoc.send_c_store(ds).Status))
            assoc.release()
        except BaseException as exc:
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return statuses


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def study_record(client: DICOMwebClient, study: str) -> dict[str, Any]:
    fields = [
        NUMBER_OF_STUDY_RELATED_INSTANCES,
        NUMBER_OF_STUDY_RELATED_SERIES,
        MODALITIES_IN_STUDY,
    ]
    (found,) = client.search_for_studies(search_filters={"StudyInstanceUID": study}, fields=fields)
    return found


def wait_indexed(client: DICOMwebClient, study: str, count: int) -> None:
    """Wait until QIDO finds ``count`` instances in ``study``, then until ingest is idle."""
    deadline = time.monotonic() + INDEXED_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if len(client.search_for_instances(study_instance_uid=study)) >= count:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # a notification delivered twice would be ingested by now


def test_sixteen_associations_one_study(local_stack: RunningStack) -> None:
    study = generate_uid()
    senders = plan_senders(study)
    sent = ASSOCIATIONS * INSTANCES_PER_ASSOCIATION

    statuses = send_all(local_stack.dicom_port, senders)

    assert statuses == [[0] * INSTANCES_PER_ASSOCIATION] * ASSOCIATIONS
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    wait_indexed(client, study, sent)
    expected_series = Counter()
    for sender in senders:
        expected_series[sender.series] += len(sender.datasets)
    record = study_record(client, study)
    assert int(value(record, NUMBER_OF_STUDY_RELATED_INSTANCES)) == sent
    assert int(value(record, NUMBER_OF_STUDY_RELATED_SERIES)) == len(expected_series)
    assert sorted(record[MODALITIES_IN_STUDY]["Value"]) == sorted(SEEDS)
    series = client.search_for_series(
        search_filters={"StudyInstanceUID": study},
        fields=[NUMBER_OF_SERIES_RELATED_INSTANCES],
    )
    counts = {
        value(item, SERIES_INSTANCE_UID): int(value(item, NUMBER_OF_SERIES_RELATED_INSTANCES))
        for item in series
    }
    assert counts == dict(expected_series)
    instances = client.search_for_instances(study_instance_uid=study)
    assert len(instances) == sent
    files = list(Path(local_stack.data_dir).rglob(f"studies/{study}/series/*/instances/*.dcm"))
    assert len(files) == sent
