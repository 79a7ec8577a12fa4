"""``cirrus dev`` serves the viewer's build folder at / beside DICOMweb, open and closed.

A small build folder given with ``--viewer-dir`` replaces viewer/dist, so these tests
need no Node.js build.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cirrus.local.audit_journal import JOURNAL_FILE
from cirrus.local.stack import LocalStack, LocalStackConfig
from tests.e2e.conftest import RunningStack, start_stack

INDEX = b"<!doctype html><title>Cirrus test viewer</title>"
SCRIPT = b"console.log('viewer');\n"
PRINCIPAL = "arn:aws:iam::111122223333:role/viewer-reader"
CREDENTIALS = {
    "credentials": {
        "AKIALOCALVIEWER00001": {"secret": "local-viewer-secret-0123", "principal": PRINCIPAL}
    }
}
ACCESS = {"principals": {PRINCIPAL: {"default": ["query", "retrieve"]}}}


def build_folder(root: Path) -> Path:
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "index-Bx1c2d3e.js").write_bytes(SCRIPT)
    return dist


def journal_lines(stack: RunningStack) -> int:
    path = stack.data_dir / JOURNAL_FILE
    return len(path.read_text().splitlines()) if path.exists() else 0


def stopped(stack: RunningStack) -> None:
    if stack.process.poll() is None:
        assert stack.stop() == 0


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_folder(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory, dist: Path) -> Iterator[RunningStack]:
    stack = start_stack(tmp_path_factory.mktemp("data"), "--viewer-dir", str(dist))
    yield stack
    stopped(stack)


@pytest.fixture(scope="module")
def closed_stack(tmp_path_factory: pytest.TempPathFactory, dist: Path) -> Iterator[RunningStack]:
    folder = tmp_path_factory.mktemp("closed")
    (folder / "access.json").write_text(json.dumps(ACCESS))
    (folder / "credentials.json").write_text(json.dumps(CREDENTIALS))
    stack = start_stack(
        folder / "data",
        "--viewer-dir", str(dist),
        "--access", str(folder / "access.json"),
        "--credentials", str(folder / "credentials.json"),
    )  # fmt: skip
    yield stack
    stopped(stack)


def test_open_serves_viewer(open_stack: RunningStack, dist: Path) -> None:
    base = f"http://127.0.0.1:{open_stack.http_port}"

    index = requests.get(f"{base}/", timeout=10)
    script = requests.get(f"{base}/assets/index-Bx1c2d3e.js", timeout=10)
    route = requests.get(f"{base}/worklist", timeout=10)
    studies = requests.get(f"{base}/dicomweb/studies", timeout=10)

    assert index.status_code == 200
    assert index.content == INDEX
    assert index.headers["Cache-Control"] == "no-cache"
    assert "'wasm-unsafe-eval'" in index.headers["Content-Security-Policy"]
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert "immutable" in script.headers["Cache-Control"]
    assert route.content == INDEX
    assert studies.status_code in (200, 204)
    open_stack.wait_for_line(f"viewer at {base}/, from {dist}")


def test_open_config(open_stack: RunningStack) -> None:
    response = requests.get(f"http://127.0.0.1:{open_stack.http_port}/config.json", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"dicomweb": "/dicomweb", "auth": {"mode": "none"}}


def test_closed_config_and_files(closed_stack: RunningStack) -> None:
    base = f"http://127.0.0.1:{closed_stack.http_port}"
    before = journal_lines(closed_stack)

    config = requests.get(f"{base}/config.json", timeout=10)
    index = requests.get(f"{base}/", timeout=10)
    script = requests.get(f"{base}/assets/index-Bx1c2d3e.js", timeout=10)
    after_files = journal_lines(closed_stack)
    studies = requests.get(f"{base}/dicomweb/studies", timeout=10)

    assert config.json() == {
        "dicomweb": "/dicomweb",
        "auth": {"mode": "keys", "region": "us-east-1"},
    }
    assert index.status_code == 200
    assert script.status_code == 200
    # The viewer's files are neither signed nor audited; DICOMweb stays closed and audited.
    assert after_files == before
    assert studies.status_code == 403
    assert journal_lines(closed_stack) == before + 1


def test_viewer_dir_without_index_rejected(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cirrus.cli", "dev", "--viewer-dir", str(tmp_path),
         "--dicom-port", "0", "--http-port", "0", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"--viewer-dir {tmp_path} has no index.html" in result.stderr
    assert "npm run build" in result.stderr


def test_not_built_named_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # cirrus dev rejects a --viewer-dir without index.html, and its default folder is the
    # repository's, so the stack is started here through its Python API.
    empty = tmp_path / "dist"
    empty.mkdir()
    stack = LocalStack(
        LocalStackConfig(dicom_port=0, http_port=0, data_dir=tmp_path / "data", viewer_dir=empty)
    )
    caplog.set_level(logging.INFO, logger="cirrus.local")
    stack.start()
    try:
        response = requests.get(stack.viewer_url, timeout=10)
    finally:
        stack.stop()
    assert response.status_code == 404
    assert "npm run build" in response.text
    assert f"viewer not built: {empty} has no index.html" in caplog.text
