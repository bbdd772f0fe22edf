"""Mongo ``listen_events`` (design §8): the event key, the day's events as lake rows, the TTL.

The serving API writes events here (:mod:`musicrec.serve.events` re-exports :data:`COLLECTION` and
:func:`event_id`, which live here so the lake can use them without importing the serving layer).
``listens_daily`` reads day D's events (:func:`day_rows`), writes them into ``listens/date=D/daily.parquet``
beside the landing files' rows, and only once that file is published and registered marks them
loaded (:func:`mark_loaded`). The TTL index on ``received_at`` (:func:`ensure_ttl`) has a partial
filter on ``loaded_at``: Mongo never expires an event the lake does not hold yet.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
from pymongo.database import Database
from pymongo.errors import OperationFailure

log = logging.getLogger(__name__)

COLLECTION = "listen_events"
LOADED = "loaded_at"  # set by listens_daily once the lake holds the event
TTL_INDEX = "received_at_ttl_when_loaded"
SOURCE = "api"  # the lake's `source` column for rows that came through listen_events
IN_BATCH = 500  # SecantusDB's $in cost grows with the square of the list


def event_id(user_id: str, ts: datetime, track_id: str, action: str) -> str:
    """sha256 hex of ``user_id \\t <ts as epoch ms> \\t track_id \\t action``: ids hold no tab or other
    control character (:func:`musicrec.ids.id_problem`), so the joined text is unambiguous."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    ms = (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return hashlib.sha256(f"{user_id}\t{ms}\t{track_id}\t{action}".encode()).hexdigest()


def ensure_ttl(db: Database, retention: timedelta) -> None:
    """TTL on ``received_at`` for loaded events only; a changed retention is applied with ``collMod``."""
    seconds = max(0, int(retention.total_seconds()))
    coll = db[COLLECTION]
    current = coll.index_information().get(TTL_INDEX)
    if current is not None:
        if current.get("expireAfterSeconds") != seconds:
            db.command("collMod", COLLECTION, index={"name": TTL_INDEX, "expireAfterSeconds": seconds})
        return
    try:
        coll.create_index("received_at", name=TTL_INDEX, expireAfterSeconds=seconds,
                          partialFilterExpression={LOADED: {"$exists": True}})
    except OperationFailure as exc:  # another run created it meanwhile
        if TTL_INDEX not in coll.index_information():
            raise
        log.info("TTL index created concurrently: %s", exc)


def _day_span(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def day_rows(db: Database, day: date) -> tuple[dict[str, list[Any]], list[str]]:
    """Day D's events as columns of the lake's listens schema (sorted by ``_id``, so the order is
    deterministic) and their ids. Events that name only a ``track_id`` take title and artist from
    the ``songs`` catalog (an empty name would otherwise become the song's newest title)."""
    start, end = _day_span(day)
    docs = list(db[COLLECTION].find({"ts": {"$gte": start, "$lt": end}},
                                    {"user_id": 1, "track_id": 1, "artist": 1, "title": 1, "ts": 1, "action": 1}
                                    ).sort("_id", 1))
    missing = sorted({d["track_id"] for d in docs if not (d.get("artist") and d.get("title"))})
    names: dict[str, dict[str, Any]] = {}
    for i in range(0, len(missing), IN_BATCH):
        for song in db["songs"].find({"_id": {"$in": missing[i:i + IN_BATCH]}}, {"title": 1, "artist": 1}):
            names[song["_id"]] = song
    cols: dict[str, list[Any]] = {n: [] for n in ("user_id", "track_id", "artist_id", "artist_name", "track_name",
                                                   "album", "duration_s", "ts", "action", "source")}
    for d in docs:
        song = names.get(d["track_id"], {})
        ts = d["ts"]
        cols["user_id"].append(d["user_id"])
        cols["track_id"].append(d["track_id"])
        cols["artist_id"].append(None)
        cols["artist_name"].append(d.get("artist") or song.get("artist") or "")
        cols["track_name"].append(d.get("title") or song.get("title") or "")
        cols["album"].append(None)
        cols["duration_s"].append(None)
        cols["ts"].append(ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC))
        cols["action"].append(d["action"])
        cols["source"].append(SOURCE)
    return cols, [d["_id"] for d in docs]


def day_table(db: Database, day: date, schema: pa.Schema, **extra: Any) -> tuple[pa.Table, list[str]]:
    """:func:`day_rows` as a table of ``schema``; ``extra`` gives the values of columns beyond the
    listens fields (a callable gets the row number)."""
    cols, ids = day_rows(db, day)
    for name, value in extra.items():
        cols[name] = [value(i) if callable(value) else value for i in range(len(ids))]
    return pa.table(cols, schema=schema), ids


def mark_loaded(db: Database, ids: Iterable[str], at: datetime | None = None) -> int:
    """Mark events as held by the lake (from then on the TTL applies); an event marked before keeps
    its first ``loaded_at``, so a re-run changes nothing."""
    at = at or datetime.now(UTC)
    ids = list(ids)
    marked = 0
    for i in range(0, len(ids), IN_BATCH):
        res = db[COLLECTION].update_many({"_id": {"$in": ids[i:i + IN_BATCH]}, LOADED: {"$exists": False}},
                                         {"$set": {LOADED: at}})
        marked += res.modified_count
    return marked
