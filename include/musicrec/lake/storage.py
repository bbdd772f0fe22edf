"""One writer, one file, atomic replace — on local disk and on S3 alike (design §3).

Lake paths are duck-typed ``UPath``-like objects: ``airflow.sdk.ObjectStoragePath`` in the
DAGs (it resolves ``s3://<conn_id>@bucket`` credentials), ``upath.UPath`` in plain tests.
Files are always produced on local disk first, hashed, then published in one step:
``os.replace`` of a sibling temp name on disk, one PUT (``put_file``) on object stores,
so a reader never sees a half-written file and a killed writer leaves only a temp name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

LOCAL_PROTOCOLS = {"", "file", "local"}
CHUNK = 8 * 1024 * 1024


class LakePath(Protocol):  # the part of the UPath interface the library relies on
    protocol: str
    path: str
    name: str

    def __truediv__(self, other: str) -> LakePath: ...
    def open(self, mode: str = "r", **kwargs: Any) -> Any: ...
    def exists(self) -> bool: ...


@dataclass(frozen=True)
class FileInfo:
    bytes: int
    sha256: str


def is_local(path: LakePath) -> bool:
    return getattr(path, "protocol", "") in LOCAL_PROTOCOLS


def local_path(path: LakePath) -> Path:
    """The OS path of a local lake path (only valid when ``is_local``)."""
    return Path(path.path)


def sha256_file(path: str | os.PathLike[str]) -> FileInfo:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileInfo(bytes=size, sha256=digest.hexdigest())


def sha256_lake(path: LakePath) -> FileInfo:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileInfo(bytes=size, sha256=digest.hexdigest())


def publish_file(local_file: str | os.PathLike[str], dest: LakePath, *, keep_source: bool = False) -> FileInfo:
    """Atomically place ``local_file`` at ``dest``; returns its size and sha256.

    The source is moved (or copied when ``keep_source``) — never written in place at dest.
    """
    info = sha256_file(local_file)
    if is_local(dest):
        target = local_path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
        try:
            if keep_source:
                shutil.copyfile(local_file, tmp)
            else:
                shutil.move(os.fspath(local_file), tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
    else:
        # One PUT (multipart for big files, still all-or-nothing on S3): never copy-then-delete.
        dest.fs.put_file(os.fspath(local_file), dest.path)
        if not keep_source:
            os.unlink(local_file)
    return info


def write_bytes_atomic(dest: LakePath, data: bytes) -> FileInfo:
    fd, tmp = tempfile.mkstemp(prefix="musicrec-", dir=_scratch_dir())
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return publish_file(tmp, dest)


def write_json_atomic(dest: LakePath, payload: Any) -> FileInfo:
    return write_bytes_atomic(dest, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: LakePath) -> Any:
    with path.open("rb") as fh:
        return json.loads(fh.read())


def fetch_to_local(src: LakePath, dest: Path) -> Path:
    """Copy a lake file to local disk (no-op copy avoided for local lakes is the caller's choice)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if is_local(src):
        shutil.copyfile(local_path(src), dest)
    else:
        src.fs.get_file(src.path, os.fspath(dest))
    return dest


def list_files(prefix: LakePath, pattern: str = "*") -> list[LakePath]:
    """Files under ``prefix`` matching ``pattern`` (recursively), sorted by path; [] if absent."""
    if not prefix.exists():
        return []
    return sorted((p for p in prefix.rglob(pattern) if p.is_file()), key=lambda p: p.path)


def delete(path: LakePath) -> None:
    if path.exists():
        path.unlink()


def relative(path: LakePath, root: LakePath) -> str:
    """Lake-relative key of ``path`` (the registry stores keys relative to the root)."""
    base = root.path.rstrip("/") + "/"
    if not path.path.startswith(base):
        raise ValueError(f"{path} is not under the lake root {root}")
    return path.path[len(base):]


def _scratch_dir() -> str:
    from musicrec.settings import staging_dir

    return os.fspath(staging_dir())
