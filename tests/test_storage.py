"""The storage layer, on a local folder and on S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import boto3
import pytest

from eyecatcher import storage


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A writable location of each kind: a temporary folder, or a prefix in a moto bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/store"


def test_round_trip_list_exists_remove(root: str) -> None:
    a, b, c = (storage.join(root, name) for name in ("a.jpg", "sub/b.PNG", "notes.txt"))
    for uri, data in ((a, b"alpha"), (b, b"beta"), (c, b"text")):
        storage.write_atomic(uri, data)

    assert storage.read_bytes(a) == b"alpha"
    with storage.open_read(b) as handle:
        assert handle.read() == b"beta"
    assert storage.exists(a) and not storage.exists(storage.join(root, "missing.jpg"))
    assert storage.list_files(root, extensions=[".jpg", ".png"]) == sorted([a, b])
    assert storage.list_files(root, extensions=[".jpg", ".png"], recursive=False) == [a]
    assert storage.list_files(storage.join(root, "nothing-here")) == []

    storage.write_atomic(a, b"alpha v2")  # replaces
    assert storage.read_bytes(a) == b"alpha v2"
    storage.remove(a)
    storage.remove(a)  # a missing file is not an error
    assert not storage.exists(a)


def test_local_copy_gives_a_real_path(root: str) -> None:
    uri = storage.join(root, "model.onnx")
    storage.write_atomic(uri, b"weights")
    with storage.local_copy(uri) as path:
        assert path.is_file() and path.read_bytes() == b"weights"
        copied = path
    if not storage.is_local(uri):
        assert not copied.exists()  # the download is removed on exit
    else:
        assert copied.exists()  # a local file is used in place, never deleted


class _Exploding(bytes):
    """Bytes whose conversion fails half-way through a write."""

    def __bytes__(self) -> bytes:
        raise OSError("disk full")


def test_failed_local_write_keeps_the_old_file_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "out" / "bundle.pt"
    storage.write_atomic(str(target), b"old")
    with pytest.raises(OSError, match="disk full"):
        storage.write_atomic(str(target), _Exploding(b"new"))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["bundle.pt"]


def test_failed_s3_upload_leaves_no_object(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload cut off by the network is never visible under its final key."""
    import s3fs

    target = f"{s3_bucket}/models/model.onnx"
    original = s3fs.S3FileSystem._pipe_file

    async def cut_off(self, path, data, *args, **kwargs):
        raise ConnectionError("connection reset")

    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", cut_off)
    with pytest.raises(ConnectionError):
        storage.write_atomic(target, b"x" * 1000)
    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", original)
    s3 = boto3.client("s3", region_name="us-east-1")
    assert s3.list_objects_v2(Bucket="eyecatcher-test").get("KeyCount") == 0
    assert not storage.exists(target)


def test_endpoint_from_storage_options(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without AWS_ENDPOINT_URL, a flat ``endpoint_url`` option reaches the S3 client."""
    import s3fs

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(Bucket="opts")
    options = {"endpoint_url": moto_s3}
    storage.write_atomic("s3://opts/k.bin", b"ok", options)
    assert storage.read_bytes("s3://opts/k.bin", {"client_kwargs": {"endpoint_url": moto_s3}}) == (
        b"ok"
    )
    s3fs.S3FileSystem.clear_instance_cache()


def test_write_atomic_gives_the_umask_mode_not_mkstemps(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        storage.write_atomic(str(tmp_path / "default.bin"), b"x")
        os.umask(0o027)
        storage.write_atomic(str(tmp_path / "group.bin"), b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "default.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "group.bin").stat().st_mode) == 0o640


def test_write_atomic_fsyncs_the_folder_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync
    target = tmp_path / "sub" / "file.bin"

    def spy(fd: int) -> None:
        # What was synced, and whether the new name was already in place at that moment.
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append((kind, target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    storage.write_atomic(str(target), b"payload")
    assert synced == [("file", False), ("dir", True)]
    assert target.read_bytes() == b"payload"
