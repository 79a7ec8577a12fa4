"""C-FIND study queries through the gateway, next to the same searches run by QIDO's engine.

Loads the synthetic studies of ``bench/qido_scale.py`` into a moto child process and starts a
gateway on 127.0.0.1. Each search kind of that benchmark then runs ``--runs`` times as a
Study Root C-FIND with pynetdicom over one association, and as ``QidoService.search`` in
process. C-FIND returns every match, so the QIDO searches ask for ``limit=1000``, and every
search returns the same seven attributes. It prints, per kind, the matches, the median
milliseconds of both, and the C-FIND time per match beyond the engine's time. A last row
lists all studies with a universal query.

    .venv/bin/python bench/find.py --studies 1000 --runs 10
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import time
from collections.abc import Callable
from functools import partial

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from qido_scale import SITE, Synthetic, load, search_kinds

from cirrus.config import ResourceNames, Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.server import Gateway
from cirrus.local.moto_process import LOOPBACK, start_moto, use_local_credentials
from cirrus.local.resources import create_resources
from cirrus.query.identifier import STUDY_ROOT_FIND
from cirrus.services import Services

RETURNED = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)


def _identifier(keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURNED:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value.split(",") if "," in value else value)
    return ds


def _cfind(assoc: Association, keys: dict[str, str]) -> int:
    """Run one C-FIND and return its number of matches; fail on any final status but Success."""
    count = 0
    for status, _ in assoc.send_c_find(_identifier(keys), STUDY_ROOT_FIND):
        if status.Status in (0xFF00, 0xFF01):
            count += 1
        elif status.Status != 0x0000:
            raise RuntimeError(f"C-FIND ended with status 0x{status.Status:04X}")
    return count


def _qido(services: Services, keys: dict[str, str]) -> int:
    params = {name: [value] for name, value in keys.items()}
    params["limit"] = ["1000"]
    params["includefield"] = [",".join(RETURNED)]
    result = services.qido.search(site=SITE, level="STUDY", params=params, base_url="")
    return len(result.matches)


def _median_ms(run: Callable[[], int], runs: int) -> tuple[float, int]:
    timings, matches = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        matches = run()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000, matches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10, help="searches per kind")
    args = parser.parse_args()
    use_local_credentials()
    moto = start_moto()
    try:
        names = ResourceNames(deployment=f"find{args.studies}")
        settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
        services = Services(settings)
        data = Synthetic()
        seconds = load(services.index_model, 0, args.studies, data)
        print(f"loaded {args.studies} studies in {seconds:.1f} s", flush=True)
        kinds = search_kinds(data, random.Random(args.studies))
        kinds["universal (every study)"] = lambda: {}
        config = AEConfig(open=True, default_site=SITE)
        with Gateway.start(services, config, LOOPBACK, 0) as gateway:
            ae = AE("BENCHSCU")
            ae.add_requested_context(STUDY_ROOT_FIND, ImplicitVRLittleEndian)
            assoc = ae.associate(LOOPBACK, gateway.port, ae_title=config.ae_title)
            # Without it, the SCU's Nagle algorithm delays each request by the gateway's
            # delayed ACK (about 40 ms on Linux), which is not the gateway's own time.
            sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                print(
                    "| search | matches | C-FIND ms | QIDO engine ms | extra C-FIND ms per match |"
                )
                print("| --- | --- | --- | --- | --- |")
                for name, pick in kinds.items():
                    keys = pick()
                    for _ in range(2):  # unmeasured runs open the connections first
                        _cfind(assoc, keys)
                        _qido(services, keys)
                    cfind_ms, matches = _median_ms(partial(_cfind, assoc, keys), args.runs)
                    qido_ms, qido_matches = _median_ms(partial(_qido, services, keys), args.runs)
                    if qido_matches != min(matches, 1000):
                        raise RuntimeError(f"{name}: C-FIND {matches}, QIDO {qido_matches}")
                    extra = (cfind_ms - qido_ms) / matches if matches else float("nan")
                    print(
                        f"| {name} | {matches} | {cfind_ms:.1f} | {qido_ms:.1f} | {extra:.2f} |",
                        flush=True,
                    )
            finally:
                assoc.release()
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
