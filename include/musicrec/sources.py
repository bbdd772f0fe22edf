"""Which sources a run may read, and where it may write: trigger-form and connection values are untrusted.

A ``source_url``, an LRCLIB ``base_url`` or a ``dump_path`` comes from a trigger form, a Variable or a
connection, so anyone who can trigger a DAG chooses it. This module is the one place that decides:

* **Allow-list** (:func:`check_url`): a URL is read only when it falls under one of the configured
  prefixes (Variable ``musicrec_allowed_sources``, read by the Airflow layer and passed in here).
  Prefixes match by parts, never as raw strings: the same scheme, host and port (so
  ``https://files.example.com`` never admits ``https://files.example.com.evil.org``), and a path that
  starts at a segment boundary after percent-decoding and normalising; any ``..`` segment is refused.
* ``file://`` compares *real* paths (symlinks and ``..`` resolved), so a link inside an allowed
  folder cannot reach ``/proc/self/environ``; callers then open the resolved path.
* ``http(s)://``: every address the host resolves to (IPv4 and IPv6; an IPv4-mapped IPv6 address
  counts as its IPv4 address) must be public, unless the matching entry allows private ones
  explicitly: its host is that IP literal, or it is written as
  ``{"prefix": "...", "private": true}``. Redirects are followed by hand, each hop checked the same way.
* **Containment** (:func:`contained`): every local or lake path built from input is normalised (and
  for local paths resolved) and must stay inside its folder.
* **Names** (:func:`safe_name`): a file name taken from a URL is checked *after* decoding.

Every refusal raises :class:`SourceNotAllowed`, which names the rule and the offending value.
"""

from __future__ import annotations

import ipaddress
import json
import os
import posixpath
import socket
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ALLOWED_SOURCES_VARIABLE = "musicrec_allowed_sources"
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_NAME_BYTES = 255  # the longest file name common file systems accept


class SourceNotAllowed(ValueError):
    """A source, name, path or size refused by the source policy; the message names the rule."""

    def __init__(self, rule: str, value: object, detail: str) -> None:
        super().__init__(f"refused by rule '{rule}': {value!r}: {detail}")
        self.rule = rule
        self.value = value


@dataclass(frozen=True)
class AllowEntry:
    prefix: str
    private: bool = False  # private/loopback/link-local addresses allowed for this entry's host

    @property
    def explicit_private(self) -> bool:
        return self.private or _is_ip(urlsplit(self.prefix).hostname or "")


Allowed = Sequence[str | dict[str, Any] | AllowEntry]
Resolver = Callable[[str, int], Iterable[str]]


def parse_allowed(value: str | Allowed | None) -> list[AllowEntry]:
    """The allow-list from the Variable's JSON (a list of URL prefixes; an entry may also be
    ``{"prefix": ..., "private": true}``), or from a list already parsed."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise SourceNotAllowed("allow-list", text, f"Variable {ALLOWED_SOURCES_VARIABLE} must be a "
                                   f"JSON list of URL prefixes ({exc})") from None
        if not isinstance(value, list):
            raise SourceNotAllowed("allow-list", text, f"Variable {ALLOWED_SOURCES_VARIABLE} must be a "
                                   "JSON list of URL prefixes")
    out = []
    for item in value:
        if isinstance(item, AllowEntry):
            entry = item
        elif isinstance(item, str):
            entry = AllowEntry(item.strip())
        elif isinstance(item, dict) and isinstance(item.get("prefix"), str):
            entry = AllowEntry(item["prefix"].strip(), bool(item.get("private", False)))
        else:
            raise SourceNotAllowed("allow-list", item, "an entry is a URL prefix or "
                                   '{"prefix": "...", "private": true}')
        parts = urlsplit(entry.prefix)
        try:
            parts.port  # noqa: B018
        except ValueError:
            raise SourceNotAllowed("allow-list", entry.prefix, "the entry has an invalid port") from None
        if not parts.scheme or (parts.scheme != "file" and not parts.netloc):
            raise SourceNotAllowed("allow-list", entry.prefix, "an entry needs a scheme and a location, "
                                   "e.g. https://host/path/, file:///folder/ or s3://conn@bucket/prefix/")
        out.append(entry)
    return out


def check_url(url: str, allowed: str | Allowed | None, *, resolve: Resolver | None = None,
              what: str = "source_url") -> str:
    """Refuse ``url`` unless an allowed prefix admits it; returns the URL to read (for ``file://``,
    the URL of the resolved real path, so a symlink swapped in later is not followed)."""
    entries = parse_allowed(allowed)
    _check_chars(url, what)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme:
        raise SourceNotAllowed("scheme", url, f"{what} needs a scheme (http://, https://, file://, s3://)")
    if scheme == "file":
        return _check_file(url, entries, what)
    try:
        parts.port  # noqa: B018  (a bad port raises here, not deep in a match)
    except ValueError:
        raise SourceNotAllowed("port", url, f"{what} has an invalid port") from None
    decoded = _clean_path(url, what)
    if scheme in DEFAULT_PORTS:
        if parts.username is not None or parts.password is not None:
            raise SourceNotAllowed("credentials", url, f"{what} must not carry user:password (use a connection)")
        entry = _match_http(parts, decoded, entries)
        if entry is None:
            raise SourceNotAllowed("allowed-prefix", url, _not_listed(entries, what))
        check_addresses(parts.hostname or "", parts.port or DEFAULT_PORTS[scheme], entry, resolve=resolve, url=url)
        return url
    for entry in entries:
        e = urlsplit(entry.prefix)
        if e.scheme.lower() == scheme and e.netloc == parts.netloc and _path_under(decoded, _norm(unquote(e.path))):
            return url
    raise SourceNotAllowed("allowed-prefix", url, _not_listed(entries, what))


def check_path(path: str | os.PathLike[str], allowed: str | Allowed | None, *, what: str = "dump_path") -> Path:
    """A local file path (the LRCLIB dump) under the same rule as ``file://`` URLs; returns its real path."""
    text = os.fspath(path)
    _check_chars(text, what)
    if "://" in text:
        return Path(unquote(urlsplit(check_url(text, allowed, what=what)).path))
    return Path(unquote(urlsplit(check_url(Path(os.path.abspath(text)).as_uri(), allowed, what=what)).path))


def check_addresses(host: str, port: int, entry: AllowEntry, *, resolve: Resolver | None = None,
                    url: str = "") -> list[str]:
    """Every address ``host`` resolves to must be public unless ``entry`` allows private ones."""
    if not host:
        raise SourceNotAllowed("host", url, "no host in the URL")
    addresses = list((resolve or _resolve)(host, port))
    if not addresses:
        raise SourceNotAllowed("host", url, f"{host} resolves to no address")
    for addr in addresses:
        if not is_public(addr) and not entry.explicit_private:
            raise SourceNotAllowed("private-address", url, f"{host} resolves to {addr}, a private, loopback or "
                                   f"link-local address; allow it explicitly (an entry naming that address, or "
                                   f'{{"prefix": "{entry.prefix}", "private": true}})')
    return addresses


def check_peer(url: str, peer: str | None, allowed: str | Allowed | None) -> None:
    """After connecting: the address actually reached obeys the same rule (DNS may have changed)."""
    if not peer:
        return
    parts = urlsplit(url)
    entry = _match_http(parts, _norm(unquote(parts.path)), parse_allowed(allowed))
    if entry is None:
        raise SourceNotAllowed("allowed-prefix", url, "not allowed")
    if not is_public(peer) and not entry.explicit_private:
        raise SourceNotAllowed("private-address", url, f"connected to {peer}, a private, loopback or link-local "
                               "address, without an explicit allow entry")


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_global and not ip.is_multicast


def safe_name(name: str, *, what: str = "file name") -> str:
    """``name`` (already percent-decoded) as one plain file name, or :class:`SourceNotAllowed`."""
    if not name or name in (".", ".."):
        raise SourceNotAllowed("file-name", name, f"{what} is empty or a directory reference")
    if "/" in name or "\\" in name:
        raise SourceNotAllowed("file-name", name, f"{what} contains a path separator (after decoding)")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise SourceNotAllowed("file-name", name, f"{what} contains a NUL or control character")
    if name.startswith(".") or name.startswith("_"):
        raise SourceNotAllowed("file-name", name, f"{what} starts with '.' or '_' (reserved for temp files "
                               "and manifests)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise SourceNotAllowed("file-name", name, f"{what} is longer than {MAX_NAME_BYTES} bytes")
    return name


def contained(base: Any, *parts: str) -> Any:
    """``base / parts…`` after checking it stays inside ``base``: local paths (``Path`` or a local
    ``UPath``/``ObjectStoragePath``) by their resolved real paths, object-store paths by their
    normalised keys. Works on ``Path`` and on lake paths alike; returns the same type as ``base``."""
    target = base
    for part in parts:
        target = target / part
    if isinstance(base, Path):
        base_s, target_s = os.path.realpath(base), os.path.realpath(target)
        local = True
    else:
        local = getattr(base, "protocol", "") in ("", "file", "local")
        base_s, target_s = base.path, target.path
        if local:
            base_s, target_s = os.path.realpath(base_s), os.path.realpath(target_s)
        else:
            base_s, target_s = posixpath.normpath("/" + base_s), posixpath.normpath("/" + target_s)
    if target_s == base_s or not target_s.startswith(base_s.rstrip("/") + "/"):
        raise SourceNotAllowed("contained-path", "/".join(parts),
                               f"the path leaves its folder {base_s} (resolves to {target_s})")
    if any(p in ("", ".", "..") for part in parts for p in str(part).split("/")):
        raise SourceNotAllowed("contained-path", "/".join(parts), "empty, '.' or '..' segment")
    return target


class BoundedReader:
    """A read-only stream that refuses to yield more than ``budget.limit`` bytes in all (one budget can
    be shared by every member of an archive): what a ``.gz`` *unpacks to* is counted as it is read,
    whatever the gzip header claims, and ``read()`` without a size never loads more than the bound."""

    PIECE = 16 << 20

    def __init__(self, raw: Any, budget: ByteBudget) -> None:
        self.raw, self.budget = raw, budget

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:  # everything: in pieces (a read(huge) may allocate huge up front)
            parts = []
            while piece := self.read(self.PIECE):
                parts.append(piece)
            return b"".join(parts)
        data = self.raw.read(min(n, self.budget.limit - self.budget.used + 1))
        self.budget.take(len(data))
        return data

    def readable(self) -> bool:
        return True


@dataclass
class ByteBudget:
    limit: int
    label: str
    rule: str = "max_unpacked_bytes"
    used: int = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise SourceNotAllowed(self.rule, self.label, f"unpacks to more than {self.rule}={self.limit} bytes")


def sqlite_ro_uri(path: str | os.PathLike[str]) -> str:
    """A read-only SQLite URI of ``path`` with every special character percent-quoted, so a ``?`` or
    ``#`` in the name stays in the name instead of starting SQLite's query string."""
    return Path(os.path.abspath(os.fspath(path))).as_uri() + "?mode=ro"


# ----------------------------------------------------------------------------- internals

def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SourceNotAllowed("host", host, f"cannot resolve the host ({exc})") from None
    return sorted({str(info[4][0]) for info in infos})


def _check_chars(value: str, what: str) -> None:
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise SourceNotAllowed("control-character", value, f"{what} contains a NUL or control character")


def _norm(path: str) -> str:
    return posixpath.normpath("/" + path) if path else "/"


def _clean_path(url: str, what: str) -> str:
    raw = urlsplit(url).path
    decoded = unquote(raw)
    if "\x00" in decoded or any(seg == ".." for seg in decoded.replace("\\", "/").split("/")):
        raise SourceNotAllowed("path-traversal", url, f"{what} has a '..' segment (after decoding)")
    return _norm(decoded)


def _path_under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _match_http(parts: Any, decoded: str, entries: list[AllowEntry]) -> AllowEntry | None:
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or DEFAULT_PORTS.get(scheme)
    for entry in entries:
        e = urlsplit(entry.prefix)
        if (e.scheme.lower() == scheme and (e.hostname or "").lower() == host
                and (e.port or DEFAULT_PORTS.get(scheme)) == port and _path_under(decoded, _norm(unquote(e.path)))):
            return entry
    return None


def _check_file(url: str, entries: list[AllowEntry], what: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SourceNotAllowed("file-host", url, "file:// URLs name a local path (file:///path)")
    if parts.query or parts.fragment:
        raise SourceNotAllowed("file-host", url, "file:// URLs take no query or fragment")
    real = os.path.realpath(unquote(parts.path))
    for entry in entries:
        e = urlsplit(entry.prefix)
        if e.scheme.lower() != "file":
            continue
        base = os.path.realpath(unquote(e.path))
        if real == base or real.startswith(base.rstrip("/") + "/"):
            return Path(real).as_uri()
    raise SourceNotAllowed("allowed-prefix", url, f"resolves to {real}, outside every allowed file:// folder; "
                           + _not_listed(entries, what))


def _not_listed(entries: list[AllowEntry], what: str) -> str:
    listed = ", ".join(e.prefix for e in entries) or "nothing"
    return (f"{what} is not under an allowed prefix of Variable {ALLOWED_SOURCES_VARIABLE} (allowed: {listed}); "
            "add a prefix to that Variable to allow it")
