"""Orthanc as a DICOM peer of the gateway, started by a test or a benchmark and stopped by PID.

``running_orthanc`` starts Debian's Orthanc (``/usr/sbin/Orthanc``, 1.10.1 when written) with
a configuration generated into a temporary folder. That configuration sets its own AE title,
free DICOM and HTTP ports, storage and index in the folder, no plugins (or only the DICOMweb
plugin, with ``dicomweb=True``), no HTTP access from other hosts, and the modalities it may
talk to. Orthanc 1.10.1 cannot choose the address it
listens on, so it runs with ``loopback_bind.c`` preloaded, which rewrites its wildcard binds
to 127.0.0.1. The context manager returns once the REST API responds, and stops the process
by its PID.

Tests call ``require_orthanc()`` first: it skips, with the reason, when Orthanc or gcc is not
installed (``scripts/system-deps test`` installs both).

    with running_orthanc(tmp_path, {"cirrus": Modality("CIRRUS", gateway.port)}) as orthanc:
        orthanc.upload(path)
        orthanc.rest("POST", "/modalities/cirrus/store", json=ids)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import requests

from cirrus.local.moto_process import LOOPBACK

ORTHANC_BINARY: Final = Path("/usr/sbin/Orthanc")
# Debian's orthanc-dicomweb package, 1.7 when written.
DICOMWEB_PLUGIN: Final = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOMWEB_ROOT: Final = "/dicom-web/"
SHIM_SOURCE: Final = Path(__file__).with_name("loopback_bind.c")
DEFAULT_AE_TITLE: Final = "ORTHANC"

# Time Orthanc gets to open its database and serve REST requests (under a second here).
_START_TIMEOUT_SECONDS: Final = 30.0
_STOP_TIMEOUT_SECONDS: Final = 10.0
_REST_TIMEOUT_SECONDS: Final = 60.0

# Options of the Orthanc that benchmarks compare with: 4 DICOM threads, 50 HTTP threads, no
# HTTP compression, C-FIND reading the stored files, and every DICOM request accepted.
# SyncStorageArea (fsync of each file) keeps Orthanc's default, true.
BENCHMARK_SETTINGS: Final[Mapping[str, Any]] = {
    "DicomThreadsCount": 4,
    "HttpThreadsCount": 50,
    "HttpCompressionEnabled": False,
    "StorageAccessOnFind": "Always",
    "StorageCompression": False,
    "OverwriteInstances": False,
    "DicomAlwaysAllowEcho": True,
    "DicomAlwaysAllowStore": True,
    "DicomAlwaysAllowFind": True,
    "DicomAlwaysAllowGet": True,
    "DicomAlwaysAllowMove": True,
}


@dataclass(frozen=True)
class Modality:
    """A DICOM peer in Orthanc's ``DicomModalities``: its AE title and port on loopback."""

    ae_title: str
    port: int
    host: str = LOOPBACK

    def as_orthanc(self) -> dict[str, Any]:
        return {
            "AET": self.ae_title,
            "Host": self.host,
            "Port": self.port,
            "AllowEcho": True,
            "AllowFind": True,
            "AllowMove": True,
            "AllowGet": True,
            "AllowStore": True,
        }


@dataclass
class Orthanc:
    """A running Orthanc: its AE title, ports and folder, and its REST API."""

    process: subprocess.Popen[bytes]
    ae_title: str
    dicom_port: int
    http_port: int
    folder: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call Orthanc's REST API and return the decoded JSON body (None when empty)."""
        response = self.session.request(
            method, self.url + path, timeout=_REST_TIMEOUT_SECONDS, **kwargs
        )
        if not response.ok:
            raise AssertionError(
                f"Orthanc {method} {path} failed with {response.status_code}: {response.text}"
            )
        return response.json() if response.content else None

    def upload(self, path: Path | str) -> str:
        """Store a Part 10 file in Orthanc and return the instance's Orthanc ID."""
        created = self.rest("POST", "/instances", data=Path(path).read_bytes())
        return str(created["ID"])

    def add_modality(self, name: str, modality: Modality) -> None:
        """Add or replace a modality while Orthanc runs (REST ``PUT /modalities/{name}``)."""
        self.rest("PUT", f"/modalities/{name}", json=modality.as_orthanc())

    def instance_uids(self) -> set[str]:
        """Return the SOP Instance UIDs of every instance that Orthanc stores."""
        uids = set()
        for orthanc_id in self.rest("GET", "/instances"):
            tags = self.rest("GET", f"/instances/{orthanc_id}/simplified-tags")
            uids.add(str(tags["SOPInstanceUID"]))
        return uids

    def stop(self) -> None:
        """Stop Orthanc by its PID: SIGTERM, then SIGKILL if it has not ended in 10 s."""
        self.session.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def missing_requirement() -> str | None:
    """Return why Orthanc cannot run here, or None when it can."""
    if not os.access(ORTHANC_BINARY, os.X_OK):
        return f"Orthanc is not installed at {ORTHANC_BINARY} (run scripts/system-deps test)"
    if shutil.which("gcc") is None:
        return "gcc is missing, so the loopback shim for Orthanc cannot be built"
    return None


def require_orthanc() -> None:
    """Skip the calling test when Orthanc or gcc is not installed."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)


def require_dicomweb_plugin() -> None:
    """Skip the calling test when Orthanc, gcc or Orthanc's DICOMweb plugin is not installed."""
    require_orthanc()
    if not DICOMWEB_PLUGIN.is_file():
        pytest.skip(
            f"Orthanc's DICOMweb plugin is not installed at {DICOMWEB_PLUGIN} "
            "(run scripts/system-deps test)"
        )


def build_shim(folder: Path) -> Path:
    """Compile ``loopback_bind.c`` into ``folder`` and return the shared library's path."""
    library = folder / "loopback_bind.so"
    result = subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"gcc failed to build the loopback shim: {result.stderr}")
    return library


def free_port() -> int:
    """Return a loopback port that is free now; Orthanc binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def orthanc_configuration(
    folder: Path,
    ae_title: str,
    dicom_port: int,
    http_port: int,
    modalities: Mapping[str, Modality],
    dicomweb: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the configuration of a test Orthanc whose files all live in ``folder``.

    With ``dicomweb``, Orthanc loads its DICOMweb plugin and serves DICOMweb under
    ``DICOMWEB_ROOT``. ``settings`` replaces or adds top-level options, such as
    ``BENCHMARK_SETTINGS``.
    """
    storage = folder / "storage"
    plugins = [str(DICOMWEB_PLUGIN)] if dicomweb else []
    return {
        "Name": f"test-{ae_title}",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": plugins,
        "DicomWeb": {"Enable": dicomweb, "Root": DICOMWEB_ROOT},
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomModalities": {name: modality.as_orthanc() for name, modality in modalities.items()},
        "DicomModalitiesInDatabase": False,
        # Orthanc keeps an SCU association open 5 s for reuse by default; tests want it closed.
        "DicomAssociationCloseDelay": 0,
        "DicomScuTimeout": 10,
        "SaveJobs": False,
        "StableAge": 1,
        "ConcurrentJobs": 2,
        **(settings or {}),
    }


def _wait_until_up(orthanc: Orthanc) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while True:
        if orthanc.process.poll() is not None:
            log = orthanc.log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"Orthanc exited with {orthanc.process.returncode}: {log}")
        try:
            system = orthanc.session.get(orthanc.url + "/system", timeout=2)
            if system.ok and system.json().get("DicomAet") == orthanc.ae_title:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Orthanc did not respond on {orthanc.url} within 30 s")
        time.sleep(0.1)


def start_orthanc(
    folder: Path,
    modalities: Mapping[str, Modality] | None = None,
    ae_title: str = DEFAULT_AE_TITLE,
    shim: Path | None = None,
    environment: Mapping[str, str] | None = None,
    dicomweb: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> Orthanc:
    """Start Orthanc with its configuration, storage and log in ``folder``.

    ``shim`` is a loopback_bind.so built by ``build_shim``; without one, it is built into
    ``folder``. Orthanc runs with ``environment`` (default: this process's environment) plus
    ``LD_PRELOAD``. ``settings`` overrides options of the configuration. Returns once the REST
    API responds. The caller stops the process.
    """
    folder.mkdir(parents=True, exist_ok=True)
    library = shim if shim is not None else build_shim(folder)
    dicom_port, http_port = free_port(), free_port()
    configuration = orthanc_configuration(
        folder, ae_title, dicom_port, http_port, modalities or {}, dicomweb, settings
    )
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(configuration, indent=2))
    log = (folder / "orthanc.log").open("wb")
    child_environment = {**(os.environ if environment is None else environment)}
    child_environment["LD_PRELOAD"] = str(library)
    process = subprocess.Popen(
        [str(ORTHANC_BINARY), str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_environment,
        cwd=folder,
    )
    log.close()
    orthanc = Orthanc(process, ae_title, dicom_port, http_port, folder)
    try:
        _wait_until_up(orthanc)
    except BaseException:
        orthanc.stop()
        raise
    return orthanc


@contextmanager
def running_orthanc(
    folder: Path,
    modalities: Mapping[str, Modality] | None = None,
    ae_title: str = DEFAULT_AE_TITLE,
    dicomweb: bool = False,
) -> Iterator[Orthanc]:
    """Run Orthanc for the duration of the block, as ``start_orthanc`` starts it."""
    orthanc = start_orthanc(folder, modalities, ae_title, dicomweb=dicomweb)
    try:
        yield orthanc
    finally:
        orthanc.stop()
