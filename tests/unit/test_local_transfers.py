"""The local stack's transfer objects: files under the data folder behind signed URLs."""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from cirrus.errors import NotFoundError, StoreUnavailableError
from cirrus.local import transfers as local_transfers
from cirrus.local.transfers import FolderTransferStore, TransferSite

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

BASE = "http://127.0.0.1:8080"
MULTIPART = 'multipart/related; type="application/dicom"; boundary=b1'


@pytest.fixture
def store(tmp_path: Path) -> FolderTransferStore:
    return FolderTransferStore(tmp_path / "transfers", "bucket", BASE)


def client_of(store: FolderTransferStore) -> Client:
    return Client(TransferSite(store))


def staged(store: FolderTransferStore, body: bytes = b"0123456789" * 1000) -> tuple[str, str]:
    """Write a staged response; return its key and a GET URL of it."""
    key = store.new_key("default", "responses")
    store.write(key, [body[:3], body[3:]], MULTIPART)
    return key, store.presign_get(key, 120)


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_get_url_returns_body(store: FolderTransferStore) -> None:
    body = b"0123456789" * 1000
    _, url = staged(store, body)
    assert url.startswith(f"{BASE}/transfers/sites/default/responses/")
    response = client_of(store).get(path_and_query(url))
    assert response.status_code == 200
    assert response.data == body
    assert response.headers["Content-Type"] == MULTIPART
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Access-Control-Allow-Origin" not in response.headers


def test_head_with_get_url(store: FolderTransferStore) -> None:
    _, url = staged(store)
    response = client_of(store).head(path_and_query(url))
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "10000"
    assert response.data == b""


def test_url_carries_no_patient_data(store: FolderTransferStore) -> None:
    key, url = staged(store)
    parts = urlsplit(url)
    assert parts.path == f"/{key}"
    assert set(parse_qs(parts.query)) == {"expires", "signature"}
    transfer_id = key.rsplit("/", 1)[1]
    assert len(transfer_id) == 32


def test_no_cors_headers(store: FolderTransferStore) -> None:
    # As the archive bucket on AWS, which has no CORS rule.
    _, url = staged(store)
    response = client_of(store).get(path_and_query(url), headers={"Origin": "http://viewer.test"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_expired_url_rejected(store: FolderTransferStore) -> None:
    key = store.new_key("default", "responses")
    store.write(key, [b"body"], MULTIPART)
    url = store.presign_get(key, -1)
    response = client_of(store).get(path_and_query(url))
    assert response.status_code == 403
    assert b"body" not in response.data


def test_tampered_signature_rejected(store: FolderTransferStore) -> None:
    _, url = staged(store)
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    response = client_of(store).get(path_and_query(url.replace(signature, flipped)))
    assert response.status_code == 403


def test_extended_expiry_rejected(store: FolderTransferStore) -> None:
    _, url = staged(store)
    expires = parse_qs(urlsplit(url).query)["expires"][0]
    later = url.replace(f"expires={expires}", f"expires={int(expires) + 3600}")
    assert client_of(store).get(path_and_query(later)).status_code == 403


def test_url_of_other_object_rejected(store: FolderTransferStore) -> None:
    first_key, url = staged(store)
    second_key, _ = staged(store)
    other = url.replace(first_key, second_key)
    assert client_of(store).get(path_and_query(other)).status_code == 403


def test_missing_signature_rejected(store: FolderTransferStore) -> None:
    key, _ = staged(store)
    client = client_of(store)
    assert client.get(f"/{key}").status_code == 403
    assert client.get(f"/{key}?expires=9999999999").status_code == 403


def test_get_url_rejected_for_put(store: FolderTransferStore) -> None:
    key, url = staged(store)
    response = client_of(store).put(path_and_query(url), data=b"replaced")
    assert response.status_code == 403
    assert store.read(key) == b"0123456789" * 1000


def test_put_url_rejected_for_get(store: FolderTransferStore) -> None:
    key = store.new_key("default", "uploads")
    url = store.presign_put(key, 900)
    client = client_of(store)
    assert client.put(path_and_query(url), data=b"body").status_code == 200
    assert client.get(path_and_query(url)).status_code == 403


def test_other_methods_rejected(store: FolderTransferStore) -> None:
    _, url = staged(store)
    response = client_of(store).delete(path_and_query(url))
    assert response.status_code == 405


def test_url_of_another_store_rejected(store: FolderTransferStore, tmp_path: Path) -> None:
    other = FolderTransferStore(tmp_path / "other", "bucket", BASE)
    key = store.new_key("default", "responses")
    store.write(key, [b"body"], MULTIPART)
    other.write(key, [b"body"], MULTIPART)
    assert client_of(store).get(path_and_query(other.presign_get(key, 120))).status_code == 403


def test_paths_outside_transfers_rejected(store: FolderTransferStore) -> None:
    client = client_of(store)
    for path in ["/transfers/../objects/x", "/transfers/.incoming-x", "/transfers/"]:
        assert client.get(path).status_code in (403, 404), path
    with pytest.raises(ValueError):
        store.presign_get("sites/default/a", 60)
    with pytest.raises(ValueError):
        store.presign_get("transfers/../../etc/passwd", 60)


def test_other_paths_go_to_fallback(store: FolderTransferStore) -> None:
    def fallback(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return Response(b"viewer")(environ, start_response)

    client = Client(TransferSite(store, fallback))
    assert client.get("/index.html").data == b"viewer"
    assert Client(TransferSite(store)).get("/index.html").status_code == 404


def test_put_writes_upload(store: FolderTransferStore) -> None:
    key = store.new_key("default", "uploads")
    url = store.presign_put(key, 900)
    response = client_of(store).put(
        path_and_query(url), data=b"x" * 3_000_000, headers={"Content-Type": MULTIPART}
    )
    assert response.status_code == 200
    head = store.head(key)
    assert head.size == 3_000_000
    assert head.content_type == MULTIPART
    assert store.read(key) == b"x" * 3_000_000
    # No temporary file is left beside the object and its Content-Type.
    names = sorted(path.name for path in store.path(key).parent.iterdir())
    transfer_id = key.rsplit("/", 1)[1]
    assert names == [transfer_id, f"{transfer_id}.content-type"]


def test_put_without_length_rejected(store: FolderTransferStore) -> None:
    key = store.new_key("default", "uploads")
    url = store.presign_put(key, 900)
    response = client_of(store).put(
        path_and_query(url), input_stream=BytesIO(b"body"), headers={"Transfer-Encoding": "chunked"}
    )
    assert response.status_code == 411
    with pytest.raises(NotFoundError):
        store.head(key)


def test_head_and_read_of_missing_object(store: FolderTransferStore) -> None:
    key = store.new_key("default", "uploads")
    with pytest.raises(NotFoundError):
        store.head(key)
    with pytest.raises(NotFoundError):
        store.read(key)
    store.delete(key)


def test_presign_before_server_fails(tmp_path: Path) -> None:
    store = FolderTransferStore(tmp_path / "transfers", "bucket")
    key = store.new_key("default", "responses")
    with pytest.raises(StoreUnavailableError):
        store.presign_get(key, 120)


def test_response_deleted_after_url_expires(
    store: FolderTransferStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, url = staged(store)
    now = time.time()
    monkeypatch.setattr(local_transfers.time, "time", lambda: now + 121)
    assert store.remove_expired() == 1
    assert not store.path(key).exists()
    assert client_of(store).get(path_and_query(url)).status_code == 403


def test_upload_kept_for_a_day(store: FolderTransferStore, monkeypatch: pytest.MonkeyPatch) -> None:
    key = store.new_key("default", "uploads")
    url = store.presign_put(key, 900)
    assert client_of(store).put(path_and_query(url), data=b"body").status_code == 200
    now = time.time()
    monkeypatch.setattr(local_transfers.time, "time", lambda: now + 3600)
    assert store.remove_expired() == 0
    assert store.read(key) == b"body"
    monkeypatch.setattr(local_transfers.time, "time", lambda: now + 86_401)
    assert store.remove_expired() == 1
    with pytest.raises(NotFoundError):
        store.head(key)


def test_new_store_removes_earlier_files(tmp_path: Path) -> None:
    first = FolderTransferStore(tmp_path / "transfers", "bucket", BASE)
    key = first.new_key("default", "responses")
    first.write(key, [b"body"], MULTIPART)
    second = FolderTransferStore(tmp_path / "transfers", "bucket", BASE)
    with pytest.raises(NotFoundError):
        second.head(key)


def linked_sources(tmp_path: Path) -> list[Path]:
    """Write two archive files of different sizes; return their paths."""
    folder = tmp_path / "objects"
    folder.mkdir()
    first, second = folder / "1.dcm", folder / "2.dcm"
    first.write_bytes(bytes(range(256)) * 40)
    second.write_bytes(b"\r\n--second" * 3)
    return [first, second]


def linked_body(store: FolderTransferStore, sources: list[Path]) -> tuple[str, bytes]:
    """Write a body of bytes and files; return its key and its expected content."""
    key = store.new_key("default", "responses")
    chunks: list[bytes | Path] = [b"head\r\n", sources[0], b"\r\n", b"mid", sources[1], b"tail"]
    size = store.write(key, chunks, MULTIPART)
    expected = b"head\r\n" + sources[0].read_bytes() + b"\r\nmid" + sources[1].read_bytes()
    expected += b"tail"
    assert size == len(expected)
    return key, expected


def test_linked_body_served_whole(store: FolderTransferStore, tmp_path: Path) -> None:
    key, expected = linked_body(store, linked_sources(tmp_path))
    url = store.presign_get(key, 120)
    response = client_of(store).get(path_and_query(url))
    assert response.status_code == 200
    assert response.data == expected
    assert response.headers["Content-Length"] == str(len(expected))
    assert response.headers["Content-Type"] == MULTIPART
    head = client_of(store).head(path_and_query(url))
    assert head.headers["Content-Length"] == str(len(expected))
    assert store.head(key).size == len(expected)
    assert store.read(key) == expected


def test_linked_body_read_in_pieces(store: FolderTransferStore, tmp_path: Path) -> None:
    key, expected = linked_body(store, linked_sources(tmp_path))
    file, size, _ = store.open(key)
    pieces = []
    with file:
        while piece := file.read(7):
            pieces.append(piece)
    assert size == len(expected)
    assert b"".join(pieces) == expected
    # Every read but the last returns as many bytes as asked, across segment ends.
    assert {len(piece) for piece in pieces[:-1]} == {7}


def test_linked_body_outlives_url_while_read(
    store: FolderTransferStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, expected = linked_body(store, linked_sources(tmp_path))
    store.presign_get(key, 120)
    file, _, _ = store.open(key)
    start = file.read(10)
    now = time.time()
    monkeypatch.setattr(local_transfers.time, "time", lambda: now + 121)

    assert store.remove_expired() == 0
    with file:
        rest = file.read()
    assert start + rest == expected
    assert store.remove_expired() == 1
    with pytest.raises(NotFoundError):
        store.head(key)


def test_unread_get_ends_its_reader(
    store: FolderTransferStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = linked_body(store, linked_sources(tmp_path))
    url = store.presign_get(key, 120)
    response = client_of(store).get(path_and_query(url), buffered=False)
    assert response.status_code == 200
    response.close()
    now = time.time()
    monkeypatch.setattr(local_transfers.time, "time", lambda: now + 121)

    assert store.remove_expired() == 1


def test_sweeps_remove_expired_body(
    store: FolderTransferStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = linked_body(store, linked_sources(tmp_path))
    store.presign_get(key, 120)
    now = time.time()
    monkeypatch.setattr(local_transfers.time, "time", lambda: now + 121)

    store.sweep_every(0.01)
    try:
        for _ in range(500):  # until the sweep has run, at most 5 s
            try:
                store.head(key)
            except NotFoundError:
                break
            time.sleep(0.01)
        with pytest.raises(NotFoundError):
            store.head(key)
    finally:
        store.close()


def test_bytes_body_readable_by_owner_only(store: FolderTransferStore) -> None:
    key, _ = staged(store)
    assert stat.S_IMODE(store.path(key).stat().st_mode) == 0o600


def test_linked_body_links_files(store: FolderTransferStore, tmp_path: Path) -> None:
    sources = linked_sources(tmp_path)
    key, _ = linked_body(store, sources)
    assert not store.path(key).exists()
    folder = store.path(key).with_name(store.path(key).name + ".linked")
    inodes = {path.stat().st_ino for path in folder.iterdir()}
    assert {source.stat().st_ino for source in sources} <= inodes
    # No temporary folder is left beside the object.
    names = sorted(path.name for path in store.path(key).parent.iterdir())
    transfer_id = key.rsplit("/", 1)[1]
    assert names == [transfer_id + ".content-type", transfer_id + ".linked"]


def test_linked_body_keeps_content(store: FolderTransferStore, tmp_path: Path) -> None:
    # The archive replaces a file by renaming a new one into place, or deletes it.
    sources = linked_sources(tmp_path)
    key, expected = linked_body(store, sources)
    replacement = tmp_path / "replacement"
    replacement.write_bytes(b"other content")
    replacement.replace(sources[0])
    sources[1].unlink()
    assert store.read(key) == expected


def test_linked_body_copied_without_links(
    store: FolderTransferStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(source: Path, target: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local_transfers.os, "link", cross_device)
    sources = linked_sources(tmp_path)
    key, expected = linked_body(store, sources)
    assert store.read(key) == expected
    sources[0].write_bytes(b"changed in place")
    assert store.read(key) == expected


def test_linked_body_missing_file(store: FolderTransferStore, tmp_path: Path) -> None:
    sources = linked_sources(tmp_path)
    sources[1].unlink()
    key = store.new_key("default", "responses")
    with pytest.raises(NotFoundError, match=r"2\.dcm"):
        store.write(key, [b"head", sources[0], b"mid", sources[1]], MULTIPART)
    with pytest.raises(NotFoundError):
        store.head(key)
    leftovers = [path.name for path in store.path(key).parent.iterdir()]
    assert not [name for name in leftovers if name.startswith(".incoming-")]


def test_linked_body_deleted(store: FolderTransferStore, tmp_path: Path) -> None:
    key, _ = linked_body(store, linked_sources(tmp_path))
    url = store.presign_get(key, 120)
    store.delete(key)
    with pytest.raises(NotFoundError):
        store.head(key)
    with pytest.raises(NotFoundError):
        store.read(key)
    assert client_of(store).get(path_and_query(url)).status_code == 404
    assert list(store.path(key).parent.iterdir()) == []


def test_linked_folder_not_served(store: FolderTransferStore, tmp_path: Path) -> None:
    key, _ = linked_body(store, linked_sources(tmp_path))
    with pytest.raises(ValueError):
        store.path(f"{key}.linked")
    url = store.presign_get(key, 120)
    parts = urlsplit(url)
    response = client_of(store).get(f"{parts.path}.linked?{parts.query}")
    assert response.status_code == 403


def test_bytes_only_body_is_one_file(store: FolderTransferStore) -> None:
    key, _ = staged(store)
    assert store.path(key).read_bytes() == b"0123456789" * 1000
    assert not store.path(key).with_name(store.path(key).name + ".linked").exists()


def test_linked_body_with_empty_pieces(store: FolderTransferStore, tmp_path: Path) -> None:
    sources = linked_sources(tmp_path)
    empty = tmp_path / "objects" / "empty.dcm"
    empty.write_bytes(b"")
    key = store.new_key("default", "responses")
    chunks: list[bytes | Path] = [b"", empty, b"", sources[0], empty, b"x", b""]
    size = store.write(key, chunks, MULTIPART)
    expected = sources[0].read_bytes() + b"x"
    assert size == len(expected)
    assert store.head(key).size == len(expected)
    assert store.read(key) == expected
