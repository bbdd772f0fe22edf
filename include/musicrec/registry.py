"""The ``lake_partitions`` registry in MongoDB (design §4).

One document per lake file a producer owns, keyed by its lake-relative path. Writes are
idempotent: a re-run that produces identical bytes leaves the document untouched (same
``run_id``/``written_at``), so "re-run changes nothing" holds for the registry too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

log = logging.getLogger(__name__)

COLLECTION = "lake_partitions"
LISTENS_PREFIX = "listens/"


@dataclass(frozen=True)
class PartitionRecord:
    path: str  # lake-relative, e.g. listens/date=2009-05-04/import-lastfm-1k.parquet
    dataset: str
    date: str | None  # YYYY-MM-DD, None for non-dated files (profiles)
    producer: str
    rows: int
    bytes: int
    sha256: str
    run_id: str

    def document(self, written_at: datetime) -> dict[str, Any]:
        doc = asdict(self)
        doc["_id"] = doc.pop("path")
        doc["written_at"] = written_at
        return doc


def ensure_indexes(db: Database) -> None:
    coll = db[COLLECTION]
    coll.create_index([("producer", 1), ("date", 1)])
    coll.create_index([("dataset", 1)])


def get(db: Database, path: str) -> dict[str, Any] | None:
    return db[COLLECTION].find_one({"_id": path})


def record(db: Database, records: Iterable[PartitionRecord], *, batch_size: int = 500) -> int:
    """Upsert records whose content changed; returns how many documents were written."""
    records = list(records)
    written = 0
    now = datetime.now(UTC)
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        existing = {
            d["_id"]: d
            for d in db[COLLECTION].find({"_id": {"$in": [r.path for r in batch]}}, {"sha256": 1, "rows": 1})
        }
        ops = [
            ReplaceOne({"_id": r.path}, r.document(now), upsert=True)
            for r in batch
            if (cur := existing.get(r.path)) is None or cur.get("sha256") != r.sha256 or cur.get("rows") != r.rows
        ]
        if ops:
            db[COLLECTION].bulk_write(ops, ordered=False)
            written += len(ops)
    return written


def forget(db: Database, paths: Iterable[str]) -> int:
    paths = list(paths)
    removed = 0
    for start in range(0, len(paths), 500):
        removed += db[COLLECTION].delete_many({"_id": {"$in": paths[start : start + 500]}}).deleted_count
    return removed


def paths_of_producer(db: Database, producer: str, prefix: str = LISTENS_PREFIX) -> set[str]:
    return {
        d["_id"]
        for d in db[COLLECTION].find({"producer": producer}, {"_id": 1})
        if d["_id"].startswith(prefix)
    }


def listens_partitions(db: Database, start: date | None = None, end: date | None = None) -> list[dict[str, Any]]:
    """Registered ``listens`` files with ``start <= date < end``, ordered by date and path."""
    query: dict[str, Any] = {"_id": {"$regex": "^listens/"}}
    span: dict[str, str] = {}
    if start is not None:
        span["$gte"] = start.isoformat()
    if end is not None:
        span["$lt"] = end.isoformat()
    if span:
        query["date"] = span
    return sorted(db[COLLECTION].find(query), key=lambda d: (d["date"], d["_id"]))


def newest_listens_date(db: Database) -> date | None:
    docs = list(db[COLLECTION].find({"_id": {"$regex": "^listens/"}}, {"date": 1}).sort("date", -1).limit(1))
    return date.fromisoformat(docs[0]["date"]) if docs else None


def resolve_anchor(data_interval_end: datetime | None, db: Database) -> datetime:
    """The run anchor (design §5): the data interval's end for time-scheduled runs, else the
    end (next midnight UTC) of the newest ``listens`` partition in the registry."""
    if data_interval_end is not None:
        return data_interval_end.astimezone(UTC)
    newest = newest_listens_date(db)
    if newest is None:
        raise LookupError("no listens partitions are registered yet: run listens_import or listens_daily first")
    return datetime.combine(newest + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
