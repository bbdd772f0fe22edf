"""Resumable, checksummed download of a raw dataset into ``raw/<dataset>/`` (design §4).

Sources: ``http(s)://`` (httpx, resumed with Range requests after an interruption),
``file://`` and object stores such as ``s3://`` (any fsspec path; resumed by seeking).
The partial file lives in the local staging dir under a name derived from the URL, so
a retried or killed task continues where it stopped. A manifest that already matches
makes the whole step a no-op.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from musicrec import __version__
from musicrec.lake.storage import CHUNK, LakePath, publish_file, read_json, sha256_file, write_json_atomic
from musicrec.settings import staging_dir

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
USER_AGENT = f"musicrec {__version__} (https://github.com/musicrec/musicrec)"


class ChecksumMismatch(ValueError):
    """The downloaded bytes do not hash to the expected sha256."""


@dataclass(frozen=True)
class DownloadResult:
    url: str
    file: str  # file name under raw/<dataset>/
    bytes: int
    sha256: str
    fetched_at: str
    skipped: bool = False

    def manifest(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("skipped")
        return data


def file_name_of(url: str) -> str:
    name = unquote(Path(urlparse(url).path).name)
    if not name:
        raise ValueError(f"cannot tell a file name from {url!r}")
    return name


def download(
    url: str,
    raw_dir: LakePath,
    *,
    sha256: str | None = None,
    open_source: Callable[[str], Any] | None = None,
    timeout_s: float = 60.0,
    progress_every_bytes: int = 64 * 1024 * 1024,
) -> DownloadResult:
    """Fetch ``url`` into ``raw_dir`` unless its manifest already matches.

    ``open_source`` turns a non-HTTP URL into a path object with ``open('rb')`` (the DAG
    passes ``ObjectStoragePath`` so ``s3://conn@bucket/key`` uses that connection).
    """
    sha256 = sha256.lower().strip() if sha256 else None
    name = file_name_of(url)
    manifest_path = raw_dir / MANIFEST
    target = raw_dir / name
    if manifest_path.exists():
        current = read_json(manifest_path)
        if (
            current.get("url") == url
            and current.get("file") == name
            and (sha256 is None or current.get("sha256") == sha256)
            and target.exists()
            and target.stat().st_size == current.get("bytes")
        ):
            log.info("raw/%s already matches its manifest (%s bytes, sha256 %s): nothing to do",
                     name, current["bytes"], current["sha256"])
            return DownloadResult(**{k: current[k] for k in ("url", "file", "bytes", "sha256", "fetched_at")},
                                  skipped=True)

    part = _part_path(url, name)
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        _fetch_http(url, part, timeout_s=timeout_s, progress_every=progress_every_bytes)
    else:
        opener = open_source or _default_opener
        _fetch_path(opener(url), part, progress_every=progress_every_bytes)

    info = sha256_file(part)
    if sha256 is not None and info.sha256 != sha256:
        part.unlink()  # a corrupt copy must not be resumed
        raise ChecksumMismatch(f"{url}: expected sha256 {sha256}, got {info.sha256} ({info.bytes} bytes)")
    publish_file(part, target)
    result = DownloadResult(url=url, file=name, bytes=info.bytes, sha256=info.sha256,
                            fetched_at=datetime.now(UTC).isoformat())
    write_json_atomic(manifest_path, result.manifest())
    log.info("downloaded %s -> %s (%d bytes, sha256 %s)", url, target, info.bytes, info.sha256)
    return result


def _part_path(url: str, name: str) -> Path:
    folder = staging_dir() / "downloads" / hashlib.sha1(url.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (name + ".part")


def _default_opener(url: str) -> Any:
    from upath import UPath

    return UPath(url)


class _Progress:
    def __init__(self, label: str, total: int | None, start: int, every: int) -> None:
        self.label, self.total, self.done, self.every = label, total, start, every
        self.started = time.monotonic()
        self.next_report = start + every

    def add(self, n: int) -> None:
        self.done += n
        if self.done >= self.next_report:
            self.next_report = self.done + self.every
            rate = self.done / max(time.monotonic() - self.started, 1e-6) / 1e6
            total = f"/{self.total / 1e6:.1f}" if self.total else ""
            log.info("%s: %.1f%s MB (%.1f MB/s)", self.label, self.done / 1e6, total, rate)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code == 429 or exc.response.status_code >= 500
    )


@retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(6),
       wait=wait_exponential(multiplier=0.5, max=30), reraise=True)
def _fetch_http(url: str, part: Path, *, timeout_s: float, progress_every: int) -> None:
    """Stream ``url`` into ``part``, continuing from its current size with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client, \
            client.stream("GET", url, headers=headers) as resp:
        if resp.status_code == 416 and have:
            # Range beyond the end: we already have the whole file (checked by sha256 after).
            log.info("%s: partial file is already complete (%d bytes)", url, have)
            return
        resp.raise_for_status()
        if have and resp.status_code == 206:
            mode, start = "ab", have
            log.info("resuming %s at byte %d", url, have)
        else:
            if have:
                log.warning("%s: server ignored the Range request; downloading from the start", url)
            mode, start = "wb", 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        progress = _Progress(url, total, start, progress_every)
        with open(part, mode) as fh:
            for chunk in resp.iter_bytes():  # as received: a broken connection keeps what came
                fh.write(chunk)
                progress.add(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise httpx.ReadError(f"{url}: connection closed at {part.stat().st_size} of {total} bytes")


def _fetch_path(source: Any, part: Path, *, progress_every: int) -> None:
    if not source.exists():
        raise FileNotFoundError(f"source {source} does not exist")
    total = source.stat().st_size
    have = part.stat().st_size if part.exists() else 0
    if have > total:
        have = 0
    progress = _Progress(str(source), total, have, progress_every)
    with source.open("rb") as src, open(part, "ab" if have else "wb") as fh:
        if have:
            log.info("resuming %s at byte %d", source, have)
            src.seek(have)
        while chunk := src.read(CHUNK):
            fh.write(chunk)
            progress.add(len(chunk))
