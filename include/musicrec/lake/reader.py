"""Reading ``listens`` from the lake for a time span, the way design §4 asks every reader to.

* The files come from the ``lake_partitions`` registry (never from listing the lake), so a reader
  sees exactly the partitions producers have published and recorded.
* Every file of a partition is read and events are deduplicated on the event key
  (``user_id``, ``ts``, ``track_id``): the import and ``listens_daily`` may both hold a day. Only
  partitions with more than one file pay for the dedupe; the copy from the file with the smallest
  lake path wins, so the outcome does not depend on read order.
* DuckDB does the work (bounded memory, spills to the staging dir). Remote lakes (s3://) are first
  copied to a local cache keyed by the file's sha256, so a retry or the next task reuses it.

Used by the catalog sync, ALS training and the recommendations library.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from pymongo.database import Database

from musicrec import registry
from musicrec.lake import storage
from musicrec.lake.storage import LakePath
from musicrec.settings import duckdb_memory_limit, staging_dir

log = logging.getLogger(__name__)

COLUMNS = ("user_id", "track_id", "artist_id", "artist_name", "track_name", "album", "duration_s", "ts",
           "action", "source")
EMPTY_EVENTS = (
    "SELECT NULL::VARCHAR AS user_id, NULL::VARCHAR AS track_id, NULL::VARCHAR AS artist_id, "
    "NULL::VARCHAR AS artist_name, NULL::VARCHAR AS track_name, NULL::VARCHAR AS album, "
    "NULL::DOUBLE AS duration_s, NULL::TIMESTAMPTZ AS ts, NULL::VARCHAR AS action, NULL::VARCHAR AS source "
    "WHERE false"
)


def utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def span_partitions(db: Database, start: datetime | None, end: datetime) -> list[dict[str, Any]]:
    """Registry documents of the ``listens`` files that can hold events with ``start <= ts < end``."""
    end = utc(end)
    last_day = (end - timedelta(milliseconds=1)).date()
    first_day: date | None = utc(start).date() if start is not None else None
    return registry.listens_partitions(db, first_day, last_day + timedelta(days=1))


def local_files(root: LakePath, docs: Sequence[dict[str, Any]], cache_dir: Path | None = None) -> list[Path]:
    """Local OS paths of the registered files: the files themselves on a local lake, else cached copies.

    A cached copy lives at ``<cache>/<sha256[:2]>/<sha256>/<lake path>`` (keeping the lake path keeps
    the dedupe's "smallest lake path wins" rule), so a changed file is fetched again.
    """
    out: list[Path] = []
    cache = cache_dir or staging_dir() / "lake-cache"
    for doc in docs:
        rel = doc["_id"]
        src = root / rel
        if storage.is_local(src):
            path = storage.local_path(src)
            if not path.exists():
                raise FileNotFoundError(f"registered lake file {rel} is missing at {path}")
            out.append(path)
            continue
        sha = doc.get("sha256") or "unknown"
        dest = cache / sha[:2] / sha / rel
        if not dest.exists() or (doc.get("bytes") is not None and dest.stat().st_size != doc["bytes"]):
            tmp = dest.with_name(dest.name + ".part")
            storage.fetch_to_local(src, tmp)
            os.replace(tmp, dest)
        out.append(dest)
    return out


def local_file(root: LakePath, rel: str) -> Path:
    """A local OS path of one lake file without a known checksum: the file itself on a local lake,
    else a fresh copy fetched on every call (no sha256 to key a cache on, so none could be trusted)."""
    src = root / rel
    if storage.is_local(src):
        path = storage.local_path(src)
        if not path.exists():
            raise FileNotFoundError(f"lake file {rel} is missing at {path}")
        return path
    dest = staging_dir() / "lake-fetch" / rel
    tmp = dest.with_name(dest.name + ".part")
    storage.fetch_to_local(src, tmp)
    os.replace(tmp, dest)
    return dest


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit='{duckdb_memory_limit()}'")
    tmp = staging_dir() / "duckdb-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET temp_directory='{tmp.as_posix()}'")
    con.execute(f"SET threads={threads or os.cpu_count() or 2}")
    con.execute("SET TimeZone='UTC'")
    con.execute("SET preserve_insertion_order=false")
    return con


def create_events_view(con: duckdb.DuckDBPyConnection, files_by_partition: dict[str, list[Path]],
                       start: datetime | None, end: datetime, name: str = "events") -> None:
    """``CREATE VIEW <name>``: the deduplicated listens with ``start <= ts < end``.

    ``files_by_partition``: partition date -> its local files (sorted by lake path).
    """
    single = [os.fspath(f[0]) for f in files_by_partition.values() if len(f) == 1]
    multi = [os.fspath(p) for f in files_by_partition.values() if len(f) > 1 for p in f]
    cols = ", ".join(COLUMNS)
    where = "ts < $end" + (" AND ts >= $start" if start is not None else "")
    parts = []
    if single:
        parts.append(f"SELECT {cols} FROM read_parquet({_sql_list(single)}, union_by_name=true) WHERE {where}")
    if multi:
        parts.append(
            f"SELECT {cols} FROM (SELECT {cols}, filename FROM read_parquet({_sql_list(multi)}, "
            f"union_by_name=true, filename=true) WHERE {where}) "
            "QUALIFY row_number() OVER (PARTITION BY user_id, ts, track_id ORDER BY filename) = 1")
    sql = " UNION ALL ".join(parts) if parts else EMPTY_EVENTS
    # Views cannot take parameters: inline the bounds as UTC literals.
    sql = sql.replace("$end", _ts_literal(end))
    if start is not None:
        sql = sql.replace("$start", _ts_literal(start))
    con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def open_span(root: LakePath, db: Database, start: datetime | None, end: datetime,
              con: duckdb.DuckDBPyConnection | None = None, name: str = "events"
              ) -> tuple[duckdb.DuckDBPyConnection, list[dict[str, Any]]]:
    """A DuckDB connection with view ``name`` over the span's events, and the registry documents read."""
    docs = span_partitions(db, start, end)
    files = local_files(root, docs)
    grouped: dict[str, list[Path]] = defaultdict(list)
    for doc, path in zip(docs, files, strict=True):
        grouped[doc["date"]].append(path)
    con = con or connect()
    create_events_view(con, dict(grouped), start, end, name=name)
    log.info("listens %s .. %s: %d files in %d partitions", start, end, len(docs), len(grouped))
    return con, docs


def _sql_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _ts_literal(value: datetime) -> str:
    return f"TIMESTAMPTZ '{utc(value).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"
