"""API keys (design §8): stored as their sha256 in Mongo ``api_keys``, with scopes ``read``/``events``.

A key is ``mrk_`` + 43 URL-safe characters (256 random bits); only its sha256 is stored, so the
database never holds a usable key and ``create`` shows it once. A document:
``{_id: "k_<8 hex>", name, sha256, scopes, created_at, revoked_at: null | datetime}``. ``_id`` and
``name`` identify a key in ``list``/``revoke``; nothing here ever logs a key or its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

COLLECTION = "api_keys"
SCOPES = ("read", "events")
PREFIX = "mrk_"


class KeyRequestError(ValueError):
    """A bad ``keys create``/``revoke`` request (unknown scope, duplicate name, no such key)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def ensure_indexes(db: Database) -> None:
    db[COLLECTION].create_index([("sha256", ASCENDING)], unique=True)
    db[COLLECTION].create_index([("name", ASCENDING)])


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    out = sorted({s.strip() for s in items if s.strip()})
    bad = [s for s in out if s not in SCOPES]
    if bad or not out:
        raise KeyRequestError(f"scopes must be a non-empty subset of {', '.join(SCOPES)} (got {', '.join(bad) or 'none'})")
    return out


def create(db: Database, name: str, scopes: str | Iterable[str]) -> tuple[str, dict[str, Any]]:
    """A new key: (the key itself — shown once, never stored —, its document without the hash)."""
    name = (name or "").strip()
    if not name:
        raise KeyRequestError("a key needs a --name")
    scope_list = parse_scopes(scopes)
    ensure_indexes(db)
    if db[COLLECTION].find_one({"name": name, "revoked_at": None}):
        raise KeyRequestError(f"an active key named {name!r} exists; revoke it first or pick another name")
    key = PREFIX + secrets.token_urlsafe(32)
    doc = {"_id": "k_" + secrets.token_hex(4), "name": name, "sha256": hash_key(key), "scopes": scope_list,
           "created_at": datetime.now(UTC), "revoked_at": None}
    db[COLLECTION].insert_one(doc)
    return key, public(doc)


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """A key document without its hash (what ``list`` shows)."""
    return {k: v for k, v in doc.items() if k != "sha256"}


def list_keys(db: Database, include_revoked: bool = True) -> list[dict[str, Any]]:
    query: dict[str, Any] = {} if include_revoked else {"revoked_at": None}
    return [public(d) for d in db[COLLECTION].find(query, {"sha256": 0}).sort("created_at", ASCENDING)]


def revoke(db: Database, ident: str) -> int:
    """Revoke the active key(s) whose ``_id`` or ``name`` is ``ident``; returns how many."""
    res = db[COLLECTION].update_many({"$or": [{"_id": ident}, {"name": ident}], "revoked_at": None},
                                     {"$set": {"revoked_at": datetime.now(UTC)}})
    if res.matched_count == 0:
        raise KeyRequestError(f"no active key with id or name {ident!r}")
    return res.modified_count


def lookup(db: Database, key: str) -> dict[str, Any] | None:
    """The active key document for ``key``, or None."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    digest = hash_key(key)
    doc = db[COLLECTION].find_one({"sha256": digest, "revoked_at": None}, {"name": 1, "scopes": 1, "sha256": 1})
    # the index lookup already matched; the constant-time compare keeps the check honest if it ever is not
    if doc is None or not hmac.compare_digest(doc["sha256"], digest):
        return None
    return public(doc)


class KeyCache:
    """Key lookups remembered for ``ttl_s`` (positive and negative), keyed by the hash: a request
    costs no Mongo round trip for a recently seen key; a revoke takes effect within ``ttl_s``."""

    def __init__(self, ttl_s: float = 10.0, max_entries: int = 10000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> tuple[bool, dict[str, Any] | None]:
        """(True, doc) when the key's lookup is remembered and fresh (no I/O: the event loop may call it)."""
        hit = self._entries.get(hash_key(key))
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return True, hit[1]
        return False, None

    def get(self, db: Database, key: str) -> dict[str, Any] | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        doc = lookup(db, key)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # a flood of random keys must not grow memory
            self._entries[digest] = (now, doc)
        return doc

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
