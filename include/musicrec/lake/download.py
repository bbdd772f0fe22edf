"""Resumable, checksummed download of a raw dataset into ``raw/<dataset>/`` (design §4).

Sources: ``http(s)://`` (httpx, resumed with Range requests after an interruption),
``file://`` and object stores such as ``s3://`` (any fsspec path; resumed by seeking).
The partial file lives in the local staging dir under a name derived from the URL, so
a retried or killed task continues where it stopped. A manifest that already matches
makes the whole step a no-op.

The URL is untrusted (a trigger-form value): when an allow-list is given it must pass
:func:`musicrec.sources.check_url` (redirects are followed by hand, each hop checked, and the
address connected to is checked again), the file name is checked after decoding, the target must
stay inside ``raw/<dataset>/``, and at most ``max_bytes`` are fetched. A refusal raises
:class:`musicrec.sources.SourceNotAllowed` and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

import httpx
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from musicrec import __version__, sources
from musicrec.lake.storage import CHUNK, LakePath, publish_file, read_json, sha256_file, write_json_atomic
from musicrec.settings import staging_dir
from musicrec.sources import Allowed, SourceNotAllowed

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
USER_AGENT = f"musicrec {__version__} (https://github.com/musicrec/musicrec)"
DEFAULT_MAX_BYTES = 4 * 2**30  # the real Last.fm-1K dump is ~640 MB
MAX_REDIRECTS = 5


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
    """The file name under ``raw/<dataset>/``: the URL path's last segment, checked *after*
    percent-decoding (``..%2F..%2Fdags%2Fz.py`` decodes to a path, and is refused)."""
    name = unquote(urlparse(url).path.rsplit("/", 1)[-1])  # "…/dir/" names no file
    return sources.safe_name(name, what=f"the file name of {url!r}")


def download(
    url: str,
    raw_dir: LakePath,
    *,
    sha256: str | None = None,
    open_source: Callable[[str], Any] | None = None,
    timeout_s: float = 60.0,
    progress_every_bytes: int = 64 * 1024 * 1024,
    allowed: str | Allowed | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    resolve: sources.Resolver | None = None,
) -> DownloadResult:
    """Fetch ``url`` into ``raw_dir`` unless its manifest already matches.

    ``open_source`` turns a non-HTTP URL into a path object with ``open('rb')`` (the DAG
    passes ``ObjectStoragePath`` so ``s3://conn@bucket/key`` uses that connection).
    ``allowed``: the allow-list of URL prefixes (Variable ``musicrec_allowed_sources``; the operator
    always passes it). ``None`` skips only the allow-list, for trusted library callers; names,
    containment and ``max_bytes`` are always enforced.
    """
    sha256 = sha256.lower().strip() if sha256 else None
    if max_bytes <= 0:
        raise SourceNotAllowed("max_bytes", max_bytes, "max_bytes must be positive")
    name = file_name_of(url)
    read_url = url
    if allowed is not None:
        read_url = sources.check_url(url, allowed, resolve=resolve)
    manifest_path = sources.contained(raw_dir, MANIFEST)
    target = sources.contained(raw_dir, name)
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
    try:
        if scheme in ("http", "https"):
            _fetch_http(url, part, timeout_s=timeout_s, progress_every=progress_every_bytes, allowed=allowed,
                        max_bytes=max_bytes, resolve=resolve)
        else:
            opener = open_source or _default_opener
            _fetch_path(opener(read_url), part, progress_every=progress_every_bytes, max_bytes=max_bytes)
    except SourceNotAllowed:
        part.unlink(missing_ok=True)  # a refused source leaves nothing, not even a partial file
        with contextlib.suppress(OSError):
            part.parent.rmdir()  # nor its (now empty) staging folder
        raise

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
    return sources.contained(folder, sources.safe_name(name) + ".part")


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
def _fetch_http(url: str, part: Path, *, timeout_s: float, progress_every: int, allowed: str | Allowed | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES, resolve: sources.Resolver | None = None) -> None:
    """Stream ``url`` into ``part``, continuing from its current size with a Range request.

    Redirects are followed by hand (at most ``MAX_REDIRECTS``) so each hop passes the allow-list
    before it is requested; the address actually connected to is checked too (DNS may answer
    differently the second time)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    current = url
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            with client.stream("GET", current, headers=headers) as resp:
                if allowed is not None and not _proxied(current):  # through a proxy the peer is the proxy
                    sources.check_peer(current, _peer(resp), allowed)
                if resp.is_redirect:
                    current = _next_hop(url, current, resp.headers.get("Location", ""), allowed, resolve)
                    continue
                _write_body(current, resp, part, have, progress_every=progress_every, max_bytes=max_bytes)
                return
    raise SourceNotAllowed("redirect", url, f"more than {MAX_REDIRECTS} redirects")


def _next_hop(url: str, current: str, location: str, allowed: str | Allowed | None,
              resolve: sources.Resolver | None) -> str:
    target = urljoin(current, location)
    if urlparse(target).scheme.lower() not in ("http", "https"):
        raise SourceNotAllowed("redirect", target, f"{url} redirects to a non-HTTP URL")
    if allowed is not None:
        try:
            sources.check_url(target, allowed, resolve=resolve, what="redirect target")
        except SourceNotAllowed as exc:
            raise SourceNotAllowed("redirect", target, f"{url} redirects to a location that is not allowed "
                                   f"({exc})") from None
    log.info("%s redirects to %s", current, target)
    return target


def _proxied(url: str) -> bool:
    """Whether httpx sends ``url`` through a proxy from the environment (``HTTPS_PROXY``…)."""
    import urllib.request

    parts = urlparse(url)
    return parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname or "")


def _peer(resp: httpx.Response) -> str | None:
    """The IP address the response came from (httpcore's network stream), or None when unknown."""
    stream = resp.extensions.get("network_stream")
    addr = stream.get_extra_info("server_addr") if stream is not None else None
    return str(addr[0]) if addr else None


def _write_body(url: str, resp: httpx.Response, part: Path, have: int, *, progress_every: int,
                max_bytes: int) -> None:
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
    if total is not None and total > max_bytes:
        raise SourceNotAllowed("max_bytes", url, f"the source is {total} bytes, more than max_bytes={max_bytes}")
    progress = _Progress(url, total, start, progress_every)
    with open(part, mode) as fh:
        for chunk in resp.iter_bytes():  # as received: a broken connection keeps what came
            _bounded(progress, len(chunk), max_bytes, url)
            fh.write(chunk)
    if total is not None and part.stat().st_size != total:
        raise httpx.ReadError(f"{url}: connection closed at {part.stat().st_size} of {total} bytes")


def _bounded(progress: _Progress, n: int, max_bytes: int, label: str) -> None:
    """Count bytes *before* writing them: a server that lies about its length stops at the bound."""
    if progress.done + n > max_bytes:
        raise SourceNotAllowed("max_bytes", label, f"more than max_bytes={max_bytes} bytes; raise the "
                               "max_bytes param if this source really is that large")
    progress.add(n)


def _fetch_path(source: Any, part: Path, *, progress_every: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    if not source.exists():
        raise FileNotFoundError(f"source {source} does not exist")
    total = source.stat().st_size
    if total > max_bytes:
        raise SourceNotAllowed("max_bytes", str(source), f"the source is {total} bytes, more than "
                               f"max_bytes={max_bytes}")
    have = part.stat().st_size if part.exists() else 0
    if have > total:
        have = 0
    progress = _Progress(str(source), total, have, progress_every)
    with source.open("rb") as src, open(part, "ab" if have else "wb") as fh:
        if have:
            log.info("resuming %s at byte %d", source, have)
            src.seek(have)
        while chunk := src.read(CHUNK):
            _bounded(progress, len(chunk), max_bytes, str(source))  # a file growing while read
            fh.write(chunk)
