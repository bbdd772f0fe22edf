"""The catalog sync: ``songs`` and ``users`` in MongoDB from the lake, as of a run anchor (design §4–5).

What this module owns in ``songs``: ``title``, ``artist``, ``artist_id``, ``album``, ``duration_s``,
``first_seen`` (``$min``), ``last_seen`` (``$max``), ``plays_total``, ``plays_7d``,
``catalog_as_of`` (the anchor those values reflect) and ``updated_at``; on insert only, it seeds
``lyrics.status = "pending"`` (the lyrics DAG owns ``lyrics`` from then on). In ``users``:
``gender``, ``age``, ``country``, ``registered`` (from ``profiles/users.parquet``), ``first_seen``,
``last_seen``, ``updated_at``. Nothing else is ever written (``lyrics``, ``embedding``,
``latent_vectors`` belong to other DAGs).

* Counters are **recomputed** from the lake for the anchor, never incremented: ``plays_total`` = plays
  with ``ts < anchor``, ``plays_7d`` = plays in ``[anchor - trending_days, anchor)``; a play is an
  event whose action is not ``skip``. Songs with no plays in a span get 0.
* Writes are diffs: a document is written only when a value changes, so a re-run for the same anchor
  writes nothing (``updated_at`` included). A run whose anchor is older than a song's
  ``catalog_as_of`` (a backfill after newer runs) only lowers ``first_seen``/raises ``last_seen``
  unless ``force``: backfill order does not matter.
* ``$in`` lists hold at most 500 ids, bulk writes at most ``batch_size`` operations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from musicrec.ids import id_problem
from musicrec.lake import reader
from musicrec.lake.storage import LakePath

log = logging.getLogger(__name__)

SONGS, USERS = "songs", "users"
PROFILES_PATH = "profiles/users.parquet"
IN_CHUNK = 500  # SecantusDB's $in cost grows with the square of the list
SONG_FIELDS = ("title", "artist", "artist_id", "album", "duration_s", "plays_total", "plays_7d")
PROFILE_FIELDS = ("gender", "age", "country", "registered")


@dataclass
class SyncResult:
    anchor: str
    trending_days: int
    files: int
    songs: int = 0
    songs_inserted: int = 0
    songs_updated: int = 0
    songs_zeroed: int = 0
    songs_kept_newer: int = 0
    users: int = 0
    users_inserted: int = 0
    users_updated: int = 0
    skipped_bad_ids: int = 0  # lake rows whose id a store cannot hold (lakes cleaned before the check)
    write_errors: int = 0  # single documents the server refused; the rest of their batch was written
    seconds: float = 0.0
    inputs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("inputs")
        return out


def ensure_indexes(db: Database) -> None:
    """Indexes on the fields other DAGs query (lyrics queue, trending, audit, ALS publish)."""
    songs = db[SONGS]
    songs.create_index([("plays_total", DESCENDING)])
    songs.create_index([("plays_7d", DESCENDING)])
    songs.create_index([("lyrics.status", ASCENDING), ("plays_total", DESCENDING)])
    songs.create_index([("lyrics.next_attempt_at", ASCENDING)])
    songs.create_index([("embedding.model_id", ASCENDING)])
    songs.create_index([("last_seen", DESCENDING)])
    db["models"].create_index([("kind", ASCENDING), ("status", ASCENDING)])


# ----------------------------------------------------------------------------- lake side

def song_stats_sql(anchor: datetime, trending_days: int) -> str:
    """Per-track figures over the ``events`` view (which already ends at the anchor)."""
    since = reader._ts_literal(anchor - timedelta(days=trending_days))
    # Descriptive fields: the newest non-null value; ties broken by the larger value (deterministic).
    latest = "arg_max({c}, struct_pack(t := ts, v := {c})) FILTER (WHERE {c} IS NOT NULL)"
    return f"""
        SELECT track_id,
               {latest.format(c='track_name')} AS title,
               {latest.format(c='artist_name')} AS artist,
               {latest.format(c='artist_id')} AS artist_id,
               {latest.format(c='album')} AS album,
               {latest.format(c='duration_s')} AS duration_s,
               count(*) FILTER (WHERE action <> 'skip') AS plays_total,
               count(*) FILTER (WHERE action <> 'skip' AND ts >= {since}) AS plays_7d,
               epoch_ms(min(ts)) AS first_seen_ms,
               epoch_ms(max(ts)) AS last_seen_ms
        FROM events GROUP BY track_id ORDER BY track_id
    """


def _ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC).replace(tzinfo=None)


def _batches(con: duckdb.DuckDBPyConnection, sql: str, size: int) -> Iterator[list[dict[str, Any]]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    while rows := cur.fetchmany(size):
        yield [dict(zip(names, r, strict=True)) for r in rows]


def _naive(value: Any) -> Any:
    """Mongo hands back naive UTC datetimes (ms precision): compare like with like."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value


# ----------------------------------------------------------------------------- songs

def _song_ops(rows: list[dict[str, Any]], existing: dict[str, dict[str, Any]], anchor: datetime, now: datetime,
              force: bool, result: SyncResult) -> list[UpdateOne]:
    ops = []
    anchor_n = _naive(anchor)
    for row in rows:
        tid = row["track_id"]
        if id_problem(tid):
            log.warning("catalog sync: skipping track id %.80r: %s", tid, id_problem(tid))
            result.skipped_bad_ids += 1
            continue
        cur = existing.get(tid)
        desired = {k: row[k] for k in SONG_FIELDS}
        desired["duration_s"] = None if desired["duration_s"] is None else float(desired["duration_s"])
        first, last = _ms(row["first_seen_ms"]), _ms(row["last_seen_ms"])
        update: dict[str, Any] = {}
        if cur is None:
            update["$set"] = desired | {"catalog_as_of": anchor_n, "updated_at": now}
            update["$setOnInsert"] = {"lyrics": {"status": "pending"}}
            update["$min"] = {"first_seen": first}
            update["$max"] = {"last_seen": last}
            result.songs_inserted += 1
        else:
            newer = cur.get("catalog_as_of") is not None and _naive(cur["catalog_as_of"]) > anchor_n
            changes: dict[str, Any] = {}
            if newer and not force:
                result.songs_kept_newer += 1
            else:
                changes = {k: v for k, v in desired.items() if k not in cur or _naive(cur[k]) != v}
                if _naive(cur.get("catalog_as_of")) != anchor_n:
                    changes["catalog_as_of"] = anchor_n
            if cur.get("first_seen") is None or first < _naive(cur["first_seen"]):
                update["$min"] = {"first_seen": first}
            if cur.get("last_seen") is None or last > _naive(cur["last_seen"]):
                update["$max"] = {"last_seen": last}
            if changes or update:
                update["$set"] = changes | {"updated_at": now}
                result.songs_updated += 1
        if update:
            ops.append(UpdateOne({"_id": tid}, update, upsert=True))
    return ops


def _write(db: Database, coll: str, ops: list[UpdateOne], batch_size: int, result: SyncResult | None = None
           ) -> None:
    """Unordered bulk writes: a document the server refuses is logged and counted, and never
    fails the rest of its batch (the others are applied by then) or the sync. A write-concern
    error or a lost connection still raises: those are not about one row."""
    for start in range(0, len(ops), batch_size):
        try:
            db[coll].bulk_write(ops[start:start + batch_size], ordered=False)
        except BulkWriteError as exc:
            details = exc.details or {}
            errors = details.get("writeErrors") or []
            if details.get("writeConcernErrors") or not errors:
                raise
            for err in errors[:5]:
                op = ops[start + int(err.get("index", 0))]
                log.warning("catalog sync: %s refused %.80r: %s", coll, op._filter.get("_id"), err.get("errmsg"))
            if result is not None:
                result.write_errors += len(errors)


def sync_songs(db: Database, con: duckdb.DuckDBPyConnection, anchor: datetime, trending_days: int,
               result: SyncResult, *, force: bool = False, batch_size: int = 500) -> None:
    now = _naive(datetime.now(UTC))
    con.execute(f"CREATE OR REPLACE TEMP TABLE song_stats AS {song_stats_sql(anchor, trending_days)}")
    projection = {k: 1 for k in (*SONG_FIELDS, "first_seen", "last_seen", "catalog_as_of")}
    for rows in _batches(con, "SELECT * FROM song_stats ORDER BY track_id", IN_CHUNK):
        ids = [r["track_id"] for r in rows]
        existing = {d["_id"]: d for d in db[SONGS].find({"_id": {"$in": ids}}, projection)}
        _write(db, SONGS, _song_ops(rows, existing, anchor, now, force, result), batch_size, result)
        result.songs += len(rows)
    _zero_songs_without_plays(db, con, anchor, now, force, result, batch_size)


def _zero_songs_without_plays(db: Database, con: duckdb.DuckDBPyConnection, anchor: datetime, now: datetime,
                              force: bool, result: SyncResult, batch_size: int) -> None:
    """Songs the lake has no event for before the anchor (e.g. first seen in a later partition) get 0."""
    query = {"$or": [{"plays_total": {"$ne": 0}}, {"plays_7d": {"$ne": 0}}]}
    if not force:
        query = {"$and": [query, {"$or": [{"catalog_as_of": {"$lte": _naive(anchor)}},
                                          {"catalog_as_of": None}]}]}
    cursor = db[SONGS].find(query, {"_id": 1}).sort("_id", ASCENDING).batch_size(IN_CHUNK)
    chunk: list[str] = []

    def flush() -> None:
        if not chunk:
            return
        known = {r[0] for r in con.execute("SELECT track_id FROM song_stats WHERE track_id IN "
                                           "(SELECT unnest(?::VARCHAR[]))", [chunk]).fetchall()}
        ops = [UpdateOne({"_id": tid}, {"$set": {"plays_total": 0, "plays_7d": 0,
                                                 "catalog_as_of": _naive(anchor), "updated_at": now}})
               for tid in chunk if tid not in known]
        result.songs_zeroed += len(ops)
        _write(db, SONGS, ops, batch_size, result)
        chunk.clear()

    for doc in cursor:
        chunk.append(doc["_id"])
        if len(chunk) >= IN_CHUNK:
            flush()
    flush()


# ----------------------------------------------------------------------------- users

def sync_users(db: Database, con: duckdb.DuckDBPyConnection, profiles_file: str | None, result: SyncResult,
               *, batch_size: int = 500) -> None:
    now = _naive(datetime.now(UTC))
    if profiles_file:
        con.execute("CREATE OR REPLACE TEMP VIEW profiles AS SELECT user_id, gender, age::INTEGER AS age, "
                    f"country, registered FROM read_parquet({reader._sql_list([profiles_file])})")
    else:
        con.execute("CREATE OR REPLACE TEMP VIEW profiles AS SELECT NULL::VARCHAR AS user_id, "
                    "NULL::VARCHAR AS gender, NULL::INTEGER AS age, NULL::VARCHAR AS country, "
                    "NULL::DATE AS registered WHERE false")
    sql = """
        WITH seen AS (SELECT user_id, epoch_ms(min(ts)) AS first_seen_ms, epoch_ms(max(ts)) AS last_seen_ms
                      FROM events GROUP BY user_id)
        SELECT coalesce(p.user_id, s.user_id) AS user_id, p.user_id IS NOT NULL AS has_profile,
               p.gender, p.age, p.country, epoch_ms(p.registered::TIMESTAMP) AS registered_ms,
               s.first_seen_ms, s.last_seen_ms
        FROM profiles p FULL OUTER JOIN seen s ON p.user_id = s.user_id
        ORDER BY 1
    """
    projection = {k: 1 for k in (*PROFILE_FIELDS, "first_seen", "last_seen")}
    for rows in _batches(con, sql, IN_CHUNK):
        existing = {d["_id"]: d for d in db[USERS].find({"_id": {"$in": [r["user_id"] for r in rows]}}, projection)}
        ops = []
        for row in rows:
            if id_problem(row["user_id"]):
                log.warning("catalog sync: skipping user id %.80r: %s", row["user_id"], id_problem(row["user_id"]))
                result.skipped_bad_ids += 1
                continue
            cur = existing.get(row["user_id"])
            desired: dict[str, Any] = {}
            if row["has_profile"]:
                desired = {"gender": row["gender"], "age": row["age"], "country": row["country"],
                           "registered": _ms(row["registered_ms"])}
            first, last = _ms(row["first_seen_ms"]), _ms(row["last_seen_ms"])
            update: dict[str, Any] = {}
            changes = desired if cur is None else {k: v for k, v in desired.items()
                                                   if k not in cur or _naive(cur[k]) != v}
            if first is not None and (cur is None or cur.get("first_seen") is None
                                      or first < _naive(cur["first_seen"])):
                update["$min"] = {"first_seen": first}
            if last is not None and (cur is None or cur.get("last_seen") is None
                                     or last > _naive(cur["last_seen"])):
                update["$max"] = {"last_seen": last}
            if cur is None or changes or update:
                update["$set"] = changes | {"updated_at": now}
                ops.append(UpdateOne({"_id": row["user_id"]}, update, upsert=True))
                if cur is None:
                    result.users_inserted += 1
                else:
                    result.users_updated += 1
        _write(db, USERS, ops, batch_size, result)
        result.users += len(rows)


# ----------------------------------------------------------------------------- entry point

def sync_catalog(root: LakePath, db: Database, anchor: datetime, *, trending_days: int = 7, force: bool = False,
                 batch_size: int = 500) -> SyncResult:
    """Upsert ``songs`` and ``users`` from every ``listens`` partition before ``anchor``."""
    if trending_days < 1:
        raise ValueError(f"trending_days must be >= 1, got {trending_days}")
    started = time.monotonic()
    anchor = reader.utc(anchor)
    ensure_indexes(db)
    con, docs = reader.open_span(root, db, None, anchor)
    try:
        result = SyncResult(anchor=anchor.isoformat(), trending_days=trending_days, files=len(docs),
                            inputs=[{"path": d["_id"], "sha256": d.get("sha256")} for d in docs])
        if not docs:
            log.warning("no listens partitions before %s: the catalog is left as it is", anchor)
        sync_songs(db, con, anchor, trending_days, result, force=force, batch_size=batch_size)
        profiles_doc = db["lake_partitions"].find_one({"_id": PROFILES_PATH})
        profiles_file = None
        if profiles_doc is not None:
            profiles_file = str(reader.local_files(root, [profiles_doc])[0])
        sync_users(db, con, profiles_file, result, batch_size=batch_size)
    finally:
        con.close()
    result.seconds = round(time.monotonic() - started, 3)
    log.info("catalog sync as of %s: %s", anchor, result.as_dict())
    return result
