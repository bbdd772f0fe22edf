"""The lyrics queue in MongoDB ``songs`` (design §4 ``songs.lyrics``).

Pending = no ``lyrics.status`` (or ``pending``), or ``error`` whose ``next_attempt_at`` has passed and
whose ``attempts`` are below ``max_attempts``. Order: ``plays_total`` descending, then ``_id``.
A run plans *chunks* of that order as key bounds (small: they go to XCom); a chunk re-reads its
songs with the pending filter as of the plan's time, so a re-run skips every song already settled
and every error this run already wrote. Songs are never deleted: a miss is a status.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.database import Database

from musicrec.lyrics.match import Outcome, Song

SONGS = "songs"
ORDER = [("plays_total", DESCENDING), ("_id", ASCENDING)]
FIELDS = {"title": 1, "artist": 1, "album": 1, "duration_s": 1, "plays_total": 1, "lyrics.attempts": 1}
RETRY_BASE = timedelta(minutes=10)
RETRY_MAX = timedelta(days=1)


def ensure_indexes(db: Database) -> None:
    db[SONGS].create_index([("lyrics.status", ASCENDING), ("lyrics.next_attempt_at", ASCENDING)])
    db[SONGS].create_index(ORDER)


def pending_filter(as_of: datetime, max_attempts: int) -> dict[str, Any]:
    return {"$or": [
        {"lyrics.status": {"$exists": False}},
        {"lyrics.status": "pending"},
        {"lyrics.status": "error", "lyrics.next_attempt_at": {"$lte": as_of},
         "lyrics.attempts": {"$lt": max_attempts}},
    ]}


@dataclass(frozen=True)
class Chunk:
    """Songs from ``first`` to ``last`` (inclusive) in queue order: (plays_total, _id) keys."""

    index: int
    first: tuple[int, str]
    last: tuple[int, str]
    songs: int
    as_of: str  # ISO time of the plan: the pending filter's "now"
    max_attempts: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chunk:
        return cls(int(d["index"]), (int(d["first"][0]), str(d["first"][1])), (int(d["last"][0]), str(d["last"][1])),
                   int(d["songs"]), str(d["as_of"]), int(d["max_attempts"]))

    def query(self) -> dict[str, Any]:
        (p0, id0), (p1, id1) = self.first, self.last
        return {"$and": [
            pending_filter(datetime.fromisoformat(self.as_of), self.max_attempts),
            {"$or": [{"plays_total": {"$lt": p0}}, {"plays_total": p0, "_id": {"$gte": id0}}]},
            {"$or": [{"plays_total": {"$gt": p1}}, {"plays_total": p1, "_id": {"$lte": id1}}]},
        ]}


def plan(db: Database, *, max_songs: int, max_chunks: int, min_chunk: int = 200, max_attempts: int = 5,
         as_of: datetime | None = None) -> list[Chunk]:
    """Split the first ``max_songs`` pending songs into at most ``max_chunks`` chunks."""
    as_of = as_of or datetime.now(UTC)
    keys = [(int(d.get("plays_total") or 0), d["_id"]) for d in
            db[SONGS].find(pending_filter(as_of, max_attempts), {"plays_total": 1}).sort(ORDER).limit(max_songs)]
    if not keys:
        return []
    n = max(1, min(max_chunks, math.ceil(len(keys) / max(1, min_chunk))))
    size = math.ceil(len(keys) / n)
    return [Chunk(i, keys[start], keys[min(start + size, len(keys)) - 1], len(keys[start:start + size]),
                  as_of.isoformat(), max_attempts)
            for i, start in enumerate(range(0, len(keys), size))]


def chunk_songs(db: Database, chunk: Chunk) -> list[tuple[Song, int]]:
    """(song, attempts so far) of the chunk's songs that are still pending, in queue order."""
    return [(Song.from_doc(d), int((d.get("lyrics") or {}).get("attempts") or 0))
            for d in db[SONGS].find(chunk.query(), FIELDS).sort(ORDER)]


def lyrics_update(song_id: str, outcome: Outcome, attempts_before: int, now: datetime) -> UpdateOne:
    attempts = attempts_before + 1
    doc: dict[str, Any] = {
        "status": outcome.status, "provider": outcome.provider, "lrclib_id": outcome.lrclib_id,
        "plain": outcome.plain, "synced": outcome.synced, "sha256": outcome.sha256, "score": outcome.score,
        "attempts": attempts, "next_attempt_at": None, "last_error": None, "fetched_at": now,
    }
    if outcome.status == "error":
        doc["next_attempt_at"] = now + min(RETRY_MAX, RETRY_BASE * 2 ** (attempts - 1))
        doc["last_error"] = outcome.error
    # the filter keeps a write from a stale task from overwriting a result settled meanwhile
    return UpdateOne({"_id": song_id, "lyrics.status": {"$in": [None, "pending", "error"]}},
                     {"$set": {"lyrics": doc, "updated_at": now}})


def status_counts(db: Database) -> dict[str, int]:
    """Songs per ``lyrics.status`` (no status counts as ``pending``)."""
    counts = dict.fromkeys(("found", "not_found", "instrumental", "error", "pending"), 0)
    for row in db[SONGS].aggregate([{"$group": {"_id": "$lyrics.status", "n": {"$sum": 1}}}]):
        key = row["_id"] or "pending"
        counts[key] = counts.get(key, 0) + row["n"]
    return counts
