"""The storage layer: every read of image bytes and every file a dataset writes goes through here.

Paths are local paths (relative ones resolve against the working directory, which for
``kedro run`` is the project root) or any fsspec URL, ``s3://bucket/key`` above all. One set of
``storage_options`` (fsspec filesystem arguments: ``client_kwargs``, ``endpoint_url``,
``anon``, ...) is defined once in ``conf/base/globals.yml`` and passed to every caller; it never
holds secrets (credentials come from ``conf/local/credentials.yml`` through a dataset's
``credentials``, or from the AWS default chain).

S3-compatible endpoints (MinIO, moto's server, Ceph): set ``AWS_ENDPOINT_URL`` in the
environment, which boto3 and s3fs both honour, or ``client_kwargs: {endpoint_url: ...}``
(``endpoint_url`` at the top level is accepted as well) in ``storage_options``.

Atomic writes (:func:`write_atomic`):

- local: the bytes go to a temporary file in the target's folder, are ``fsync``-ed, then
  ``os.replace`` moves it over the target, so a reader sees the old or the new file, never a
  cut-off one; the folder is ``fsync``-ed after the rename (so the new entry survives a crash)
  and the file keeps the mode a plain ``open()`` gives (``0666`` less the umask, 0644 by
  default), not ``mkstemp``'s 0600;
- object stores: one ``PUT`` of the whole object (a multipart upload for large ones, which S3
  likewise makes visible only when it completes). S3 never exposes a partially written object
  and a failed upload leaves the previous object (or none) in place, so no temporary key is
  needed and none can be left behind.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.core import split_protocol
from fsspec.implementations.local import LocalFileSystem

#: fsspec filesystem arguments (non-secret).
StorageOptions = Mapping[str, Any]


def protocol_of(uri: str) -> str:
    """The fsspec protocol of ``uri``: ``file`` for a local path, else e.g. ``s3``."""
    protocol, _ = split_protocol(str(uri))
    return protocol or "file"


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a local path (``file://`` or no protocol)."""
    return protocol_of(uri) in ("file", "local")


def _options(uri: str, storage_options: StorageOptions | None) -> dict[str, Any]:
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise TypeError(
            "storage_options must be a mapping of fsspec filesystem arguments, got "
            f"{type(storage_options).__name__} {storage_options!r} (an unresolved "
            "${globals:storage_options} when parameters are read without Kedro?)"
        )
    options = dict(storage_options or {})
    if is_local(uri):
        # Options for an object store mean nothing to a local path; keep one setting for both.
        return {"auto_mkdir": True} if "auto_mkdir" not in options else options
    if "endpoint_url" in options:
        # s3fs takes the endpoint in client_kwargs; accept the flat spelling too.
        client_kwargs = dict(options.get("client_kwargs") or {})
        client_kwargs.setdefault("endpoint_url", options.pop("endpoint_url"))
        options["client_kwargs"] = client_kwargs
    return options


def filesystem(uri: str, storage_options: StorageOptions | None = None) -> tuple[Any, str]:
    """The filesystem that holds ``uri`` and the path within it.

    Args:
        uri: A local path or an fsspec URL.
        storage_options: fsspec filesystem arguments (non-secret), merged with any
            ``credentials`` by the caller.

    Returns:
        ``(fs, path)``; ``path`` has no protocol (``bucket/key`` for S3).
    """
    uri = str(uri)
    if is_local(uri):
        _, bare = split_protocol(uri)
        options = _options(uri, storage_options)
        local_keys = {"auto_mkdir"}
        return LocalFileSystem(**{k: v for k, v in options.items() if k in local_keys}), str(
            Path(bare).absolute()
        )
    return fsspec.core.url_to_fs(uri, **_options(uri, storage_options))


def dataset_filesystem(
    filepath: str,
    credentials: Mapping[str, Any] | None = None,
    fs_args: Mapping[str, Any] | None = None,
) -> tuple[Any, str]:
    """``(fs, path)`` for a Kedro dataset's ``filepath``, the way kedro-datasets builds it.

    Args:
        filepath: The dataset's path or URL.
        credentials: Secrets from ``credentials.yml`` (``key``, ``secret``, ``token``, ...).
        fs_args: Filesystem arguments, usually ``${globals:storage_options}``.

    Returns:
        ``(fs, path)`` as :func:`filesystem`.
    """
    return filesystem(filepath, {**dict(fs_args or {}), **dict(credentials or {})})


def join(base: str, *parts: str) -> str:
    """``base`` joined with ``parts`` by ``/``, keeping a URL's protocol (``s3://b/k/x``)."""
    return posixpath.join(str(base).rstrip("/"), *parts) if parts else str(base)


def full_uri(fs: Any, path: str) -> str:
    """The URL that names ``path`` on ``fs`` (``s3://bucket/key``; a plain local path)."""
    if isinstance(fs, LocalFileSystem):
        return path
    return fs.unstrip_protocol(path)


def read_bytes(uri: str, storage_options: StorageOptions | None = None) -> bytes:
    """Read a whole file from a local path or any fsspec URL (``s3://bucket/key``)."""
    fs, path = filesystem(uri, storage_options)
    return fs.cat_file(path)


@contextlib.contextmanager
def open_read(uri: str, storage_options: StorageOptions | None = None) -> Iterator[IO[bytes]]:
    """Open ``uri`` for binary reading (streamed from object stores)."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        yield handle


def _fresh(fs: Any, path: str) -> None:
    # s3fs caches listings per filesystem instance; another process may have written since.
    if not isinstance(fs, LocalFileSystem):
        fs.invalidate_cache(path)


def exists(uri: str, storage_options: StorageOptions | None = None) -> bool:
    """Whether a file (or a non-empty prefix) exists at ``uri``."""
    fs, path = filesystem(uri, storage_options)
    _fresh(fs, path)
    return bool(fs.exists(path))


def size(uri: str, storage_options: StorageOptions | None = None) -> int:
    """The size in bytes of the file at ``uri``, without reading it."""
    fs, path = filesystem(uri, storage_options)
    _fresh(fs, path)
    return int(fs.size(path))


def list_files(
    prefix: str,
    storage_options: StorageOptions | None = None,
    extensions: Iterable[str] | None = None,
    *,
    recursive: bool = True,
) -> list[str]:
    """Every file under ``prefix``, sorted, as URLs usable by the readers here.

    Args:
        prefix: A local folder or an object-store prefix.
        storage_options: fsspec filesystem arguments.
        extensions: Keep only names ending with one of these (``.jpg``; case-insensitive).
        recursive: Also list files in sub-folders; ``False`` lists the folder's own files.

    Returns:
        Local paths or ``s3://`` URLs; an empty list when ``prefix`` does not exist.
    """
    fs, root = filesystem(prefix, storage_options)
    _fresh(fs, root)
    if not fs.exists(root):
        return []
    wanted = tuple(e.lower() for e in extensions) if extensions is not None else None
    found = []
    paths = fs.find(root) if recursive else fs.find(root, maxdepth=1)
    for path in paths:
        if wanted is not None and not path.lower().endswith(wanted):
            continue
        found.append(full_uri(fs, path))
    return sorted(found)


def write_atomic(uri: str, data: bytes, storage_options: StorageOptions | None = None) -> None:
    """Write ``data`` to ``uri`` so that a reader sees the old file or the new one, whole.

    Local files: temporary file in the same folder, ``fsync``, ``os.replace``, ``fsync`` of
    the folder; the mode is the umask's (0644 by default). Object stores:
    one ``PUT`` (see the module docstring for why that is atomic on S3).

    Args:
        uri: Where to write.
        data: The complete content.
        storage_options: fsspec filesystem arguments.
    """
    fs, path = filesystem(uri, storage_options)
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        )
        try:
            # mkstemp creates 0600; the file gets the mode ``open()`` would give it (0666 less
            # the umask, 0644 by default), so readers in the same group see what they saw before.
            os.fchmod(fd, 0o666 & ~_current_umask())
            with os.fdopen(fd, "wb") as handle:
                handle.write(bytes(data))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        # The rename is durable only once the folder's entry is on disk too.
        _fsync_directory(target.parent)
        return
    fs.pipe_file(path, bytes(data))


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux's ``/proc``).

    ``os.umask`` can only be read by setting it, which for an instant changes it for every
    thread of the process; it is the fallback only.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(folder: Path) -> None:
    """``fsync`` a folder so that a rename in it survives a crash (POSIX; no-op on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(uri: str, storage_options: StorageOptions | None = None) -> None:
    """Delete the file at ``uri``; a missing file is not an error."""
    fs, path = filesystem(uri, storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


@contextlib.contextmanager
def local_copy(uri: str, storage_options: StorageOptions | None = None) -> Iterator[Path]:
    """A real local path with the content of ``uri``, for libraries that need one.

    ONNX Runtime and ``torch.load`` read from a path. A local ``uri`` is yielded as it is;
    a remote one is downloaded to a temporary folder that is deleted on exit.

    Args:
        uri: A local path or an fsspec URL.
        storage_options: fsspec filesystem arguments.

    Yields:
        The local path.
    """
    fs, path = filesystem(uri, storage_options)
    if isinstance(fs, LocalFileSystem):
        yield Path(path)
        return
    folder = tempfile.mkdtemp(prefix="eyecatcher-")
    try:
        target = Path(folder) / posixpath.basename(path.rstrip("/"))
        fs.get_file(path, str(target))
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)
