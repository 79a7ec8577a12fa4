"""Failures of the archive itself: the modality gets an A7xx status and no false Success."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import boto3
import pydicom
import pytest
from botocore.config import Config
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.aws import AwsClients
from cirrus.config import Settings
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import (
    INTERNAL_ERROR,
    INTERNAL_ERROR_COMMENT,
    OUT_OF_RESOURCES,
    STORE_UNAVAILABLE_COMMENT,
    SUCCESS,
)
from cirrus.local.moto_process import LOOPBACK
from cirrus.storage.objects import ObjectStore, StoredObject
from tests.gateway.gateways import start_gateway
from tests.gateway.scu import associate, fresh_ct, send_file_as_is, stored_objects

CT_CONTEXT = [(CTImageStorage, ExplicitVRLittleEndian)]


class BrokenStore(ObjectStore):
    """An object store whose writes raise an error that the adapter does not translate."""

    def put(
        self, key: str, body: bytes, content_type: str = "", tags: Mapping[str, str] | None = None
    ) -> StoredObject:
        raise RuntimeError("simulated bug in the write path")


class GatedStore(ObjectStore):
    """An object store whose writes wait until ``release`` is set."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(AwsClients(settings).s3, settings.bucket, settings.kms_key_id)
        self.release = threading.Event()

    def put(
        self, key: str, body: bytes, content_type: str = "", tags: Mapping[str, str] | None = None
    ) -> StoredObject:
        assert self.release.wait(timeout=10), "the test never released the write"
        return super().put(key, body, tags=tags)


@contextmanager
def gateway_on(settings: Settings, store: ObjectStore) -> Iterator[Gateway]:
    with start_gateway(settings, store) as running:
        yield running


def send_new_ct(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Dataset, str]:
    path, key = fresh_ct(tmp_path)
    with associate(gateway.port, CT_CONTEXT) as assoc:
        return send_file_as_is(monkeypatch, assoc, path), key


def test_missing_bucket_is_out_of_resources(
    archive: ObjectStore,
    gateway_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus")
    s3 = AwsClients(gateway_settings).s3
    wrong = ObjectStore(s3, f"{gateway_settings.bucket}-missing", gateway_settings.kms_key_id)
    before = stored_objects(archive)

    with gateway_on(gateway_settings, wrong) as gateway:
        status, _ = send_new_ct(gateway, monkeypatch, tmp_path)

    assert status.Status == OUT_OF_RESOURCES
    assert status.ErrorComment == STORE_UNAVAILABLE_COMMENT
    assert stored_objects(archive) == before
    (failure,) = [r for r in caplog.records if r.getMessage().startswith("C-STORE of")]
    assert failure.levelno == logging.ERROR
    assert "NoSuchBucket" in failure.reason


def test_unreachable_s3_is_out_of_resources(
    archive: ObjectStore,
    gateway_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        closed_port = probe.getsockname()[1]
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{LOOPBACK}:{closed_port}",
        config=Config(connect_timeout=1, retries={"max_attempts": 1}),
    )
    unreachable = ObjectStore(client, archive.bucket, "alias/none")

    with gateway_on(gateway_settings, unreachable) as gateway:
        status, _ = send_new_ct(gateway, monkeypatch, tmp_path)

    assert status.Status == OUT_OF_RESOURCES
    assert status.ErrorComment == STORE_UNAVAILABLE_COMMENT


def test_unexpected_error_logged_once(
    gateway_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus")
    s3 = AwsClients(gateway_settings).s3
    broken = BrokenStore(s3, gateway_settings.bucket, gateway_settings.kms_key_id)

    with gateway_on(gateway_settings, broken) as gateway:
        status, _ = send_new_ct(gateway, monkeypatch, tmp_path)

    assert status.Status == INTERNAL_ERROR
    assert status.ErrorComment == INTERNAL_ERROR_COMMENT
    failures = [r for r in caplog.records if r.getMessage().startswith("C-STORE of")]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "simulated bug" in str(failures[0].exc_info[1])


def test_success_only_after_s3_acknowledged(
    archive: ObjectStore,
    gateway_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gated = GatedStore(gateway_settings)
    result: list[tuple[Dataset, str]] = []

    with gateway_on(gateway_settings, gated) as gateway:
        sender = threading.Thread(
            target=lambda: result.append(send_new_ct(gateway, monkeypatch, tmp_path))
        )
        sender.start()
        sender.join(timeout=0.5)
        waiting = sender.is_alive()
        gated.release.set()
        sender.join(timeout=10)

    assert waiting, "the gateway answered before the write was acknowledged"
    ((status, key),) = result
    assert status.Status == SUCCESS
    assert archive.size(key) > 0


def test_deflate_bomb_is_out_of_resources(
    archive: ObjectStore,
    gateway_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path, key = fresh_ct(tmp_path)
    bomb = pydicom.dcmread(path)
    bomb.Rows, bomb.Columns = 1000, 12_000
    bomb.PixelData = bytes(24 * 1024**2)
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb.save_as(path, enforce_file_format=True)

    with gateway_on(gateway_settings, archive) as gateway:
        with associate(gateway.port, [(CTImageStorage, DeflatedExplicitVRLittleEndian)]) as assoc:
            status = send_file_as_is(monkeypatch, assoc, path)

    assert status.Status == OUT_OF_RESOURCES
    assert "inflates to more than" in status.ErrorComment
    assert key not in stored_objects(archive)
