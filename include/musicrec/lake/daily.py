"""``listens_daily``: app events of one day, ``landing/date=D/*.jsonl[.gz]`` → ``listens/date=D/daily.parquet``.

Steps (each idempotent, each retry-safe):

1. :func:`plan_day` lists the day's landing files and groups them into at most ``max_chunks``
   chunks (the DAG maps one task per chunk, so a heavy day with many files spreads over workers);
2. :func:`clean_files` cleans the files of one chunk — same normalization and ids as the dump
   import — into one staged Parquet file and one quarantine file per landing file, under
   ``work/listens_daily/date=D/``;
3. :func:`merge_day` unions the staged files, drops duplicate events (``user_id``, ``ts``,
   ``track_id``; the first line in file order wins), sorts by (``user_id``, ``ts``), atomically
   replaces its own file ``listens/date=D/daily.parquet`` (the import's file for D is never touched;
   readers dedupe across files) and ``quarantine/daily/date=D/part-00000.parquet``, and records both
   in the ``lake_partitions`` registry. Day D's events in Mongo ``listen_events`` (the serving API's
   ``POST /v1/events``, design §8) join the landing rows before the dedupe, after every landing
   file in the first-wins order, so an event is loaded once whether it came as a file, through
   Mongo or both; once the file is published and registered they are marked loaded, which lets
   the TTL index on ``received_at`` expire them (:mod:`musicrec.events.listens`).

:func:`process_day` runs the three in one process (tests, benchmarks, scripts).

Landing lines are JSON objects (design §4). Quarantine reasons, first that applies:
``line_too_long`` > ``invalid_utf8`` > ``invalid_json`` > ``empty_user`` > ``bad_user_id`` >
``bad_timestamp`` > ``wrong_date`` (an event outside day D) > ``empty_track`` > ``bad_track_id`` >
``bad_artist_id`` > ``bad_action``. Blank lines carry no event and are only counted.

The rules are the import's (:mod:`musicrec.lake.clean`): lines are read in bounded blocks (a line
over 64 KiB is quarantined by its first 1 KiB); ids a store cannot hold
(:func:`musicrec.ids.id_problem`) are quarantined; ``ts`` is an ISO-8601 string checked by
calendar rules (``datetime.fromisoformat``: no Feb 30, no 24:00, no leap second; an offset is
converted to UTC, none means UTC) or epoch milliseconds (an integer, or a string of digits),
converted exactly; a value outside years 1..9999 is ``bad_timestamp``.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pymongo.database import Database

from musicrec import registry, settings
from musicrec import scratch as scratch_dirs
from musicrec.events import listens as listen_events
from musicrec.ids import derived_track_id, id_problem
from musicrec.lake import schema, storage
from musicrec.lake.clean import (
    BLOCK_BYTES,
    KEPT_PREFIX_BYTES,
    MAX_LINE_BYTES,
    QuarantineBuffer,
    TooLongLine,
    iter_blocks,
)
from musicrec.lake.storage import LakePath

log = logging.getLogger(__name__)

PRODUCER = "daily"
DATASET = "landing"
FILE_NAME = "daily.parquet"
REASONS = ("line_too_long", "invalid_utf8", "invalid_json", "empty_user", "bad_user_id", "bad_timestamp",
           "wrong_date", "empty_track", "bad_track_id", "bad_artist_id", "bad_action")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz")
STAGED_SCHEMA = schema.LISTENS.append(pa.field("file_no", pa.int32(), nullable=False)).append(
    pa.field("line_no", pa.int64(), nullable=False))


def landing_dir(root: LakePath, day: date) -> LakePath:
    return root / "landing" / f"date={day.isoformat()}"


def work_dir(root: LakePath, day: date) -> LakePath:
    return root / "work" / "listens_daily" / f"date={day.isoformat()}"


def _staged_name(file_name: str) -> str:
    return f"{file_name}.staged.parquet"


def _quarantine_name(file_name: str) -> str:
    return f"{file_name}.quarantine.parquet"


# ----------------------------------------------------------------------------- plan

def plan_day(root: LakePath, day: date, max_chunks: int = 8) -> list[list[str]]:
    """The day's landing file names, sorted and grouped round-robin into <= ``max_chunks`` chunks.

    ``[]`` when the folder is missing or holds no landing file: the "no data" outcome.
    """
    folder = landing_dir(root, day)
    if not folder.exists():
        log.info("no landing folder %s: no data for %s", folder, day)
        return []
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    if not names:
        log.info("landing folder %s holds no *.jsonl[.gz] file: no data for %s", folder, day)
        return []
    chunks = [names[i::max_chunks] for i in range(min(max_chunks, len(names)))]
    log.info("%s: %d landing files in %d chunks", day, len(names), len(chunks))
    return chunks


# ----------------------------------------------------------------------------- clean

@dataclass
class FileStats:
    file: str
    lines: int = 0
    blank: int = 0
    clean: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "lines": self.lines, "blank": self.blank, "clean": self.clean,
                "quarantined": dict(self.quarantined)}


def parse_ts(value: Any) -> datetime | None:
    """ISO-8601 (UTC when no offset) or epoch milliseconds → aware UTC datetime, else None."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return EPOCH + timedelta(milliseconds=value)  # exact; no float rounding of large values
        if isinstance(value, float):
            return EPOCH + timedelta(milliseconds=value) if value == value else None
        if isinstance(value, str) and value.strip():
            text = value.strip()
            if text.lstrip("-").isdigit() and text.isascii():
                return EPOCH + timedelta(milliseconds=int(text))
            ts = datetime.fromisoformat(text)
            return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _text(obj: dict[str, Any], key: str) -> str:
    """A string field, trimmed like the import's columns; anything else (null, number) is ""."""
    value = obj.get(key)
    return value.strip() if isinstance(value, str) else ""


def _optional_text(obj: dict[str, Any], key: str) -> str | None:
    value = _text(obj, key)
    return value or None


def _optional_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _lines(stream: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without its newline, too long?) in bounded reads: a line over the limit
    is cut to its first bytes and the rest is skipped, never held whole."""
    for block, first in iter_blocks(stream, BLOCK_BYTES, max_line_bytes):
        if isinstance(block, TooLongLine):
            yield first, block.prefix, True
            continue
        for line_no, raw in enumerate(block.split(b"\n"), start=first):
            if len(raw) > max_line_bytes:
                yield line_no, raw[:KEPT_PREFIX_BYTES], True
            else:
                yield line_no, raw, False


def clean_stream(stream: IO[bytes], day: date, *, file_no: int, source_file: str,
                 max_line_bytes: int = MAX_LINE_BYTES) -> tuple[pa.Table, pa.Table, FileStats]:
    """Clean one landing file's lines: (staged rows, quarantine records, stats)."""
    stats = FileStats(file=source_file)
    quarantine = QuarantineBuffer(source_file)
    cols: dict[str, list[Any]] = {n: [] for n in STAGED_SCHEMA.names}
    ids: dict[tuple[str, str], str] = {}
    for line_no, raw, too_long in _lines(stream, max_line_bytes):
        stats.lines += 1
        if too_long:
            stats.quarantined["line_too_long"] += 1
            quarantine.add(raw, "line_too_long", line_no, day.isoformat())
            continue
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            stats.blank += 1
            continue
        reason, row = _clean_line(raw, day, ids)
        if reason:
            stats.quarantined[reason] += 1
            quarantine.add(raw, reason, line_no, day.isoformat())
            continue
        row["file_no"], row["line_no"] = file_no, line_no
        for name, value in row.items():
            cols[name].append(value)
        stats.clean += 1
    return pa.table(cols, schema=STAGED_SCHEMA), quarantine.table(), stats


def _clean_line(raw: bytes, day: date, ids: dict[tuple[str, str], str]) -> tuple[str | None, dict[str, Any]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", {}
    try:
        obj = json.loads(text)
    except ValueError:
        return "invalid_json", {}
    if not isinstance(obj, dict):
        return "invalid_json", {}
    user = _text(obj, "user_id")
    if not user:
        return "empty_user", {}
    if id_problem(user):
        return "bad_user_id", {}
    ts = parse_ts(obj.get("ts"))
    if ts is None:
        return "bad_timestamp", {}
    if ts.date() != day:
        return "wrong_date", {}
    artist, title, mbid = _text(obj, "artist_name"), _text(obj, "track_name"), _text(obj, "track_id")
    if not title and not mbid:
        return "empty_track", {}
    if mbid and id_problem(mbid):
        return "bad_track_id", {}
    artist_id = _optional_text(obj, "artist_id")
    if artist_id and id_problem(artist_id):
        return "bad_artist_id", {}
    action = _text(obj, "action").lower() or "listen"
    if action not in schema.ACTIONS:
        return "bad_action", {}
    if not mbid:
        mbid = ids.get((artist, title)) or ids.setdefault((artist, title), derived_track_id(artist, title))
    return None, {
        "user_id": user, "track_id": mbid, "artist_id": artist_id,
        "artist_name": artist, "track_name": title, "album": _optional_text(obj, "album"),
        "duration_s": _optional_float(obj.get("duration_s")),
        "ts": ts.replace(microsecond=ts.microsecond // 1000 * 1000), "action": action,
        "source": _text(obj, "source") or "app",
    }


def _open_landing(path: LakePath) -> IO[bytes]:
    fh = path.open("rb")
    return gzip.open(fh, "rb") if path.name.endswith(".gz") else fh


def clean_files(root: LakePath, day: date, file_names: list[str], all_files: list[str] | None = None
                ) -> dict[str, Any]:
    """Clean landing files of day D into ``work/listens_daily/date=D/`` (one staged + one quarantine file each).

    ``all_files`` (the day's full listing; listed again when not given) fixes each file's number,
    so the first-line-wins dedupe order does not depend on how files were chunked.
    """
    if all_files is None:
        all_files = [name for chunk in plan_day(root, day) for name in chunk]
    order = {name: i for i, name in enumerate(sorted(set(all_files) | set(file_names)))}
    work = work_dir(root, day)
    scratch = scratch_dirs.make("daily-clean-")  # sweeps daily-clean-* folders of killed runs
    totals: Counter[str] = Counter()
    try:
        for name in file_names:
            src = landing_dir(root, day) / name
            started = time.monotonic()
            with _open_landing(src) as stream:
                rows, quarantined, stats = clean_stream(stream, day, file_no=order[name],
                                                        source_file=f"landing/date={day}/{name}")
            for table, target in ((rows, _staged_name(name)), (quarantined, _quarantine_name(name))):
                local = scratch / target
                pq.write_table(table, local, compression="lz4")
                storage.publish_file(local, work / target)
            totals.update(lines=stats.lines, clean=stats.clean, blank=stats.blank)
            totals.update({f"q_{k}": v for k, v in stats.quarantined.items()})
            log.info("clean %s: %d lines, %d clean, %d quarantined %s (%.2f s)", name, stats.lines, stats.clean,
                     sum(stats.quarantined.values()), dict(stats.quarantined), time.monotonic() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"date": day.isoformat(), "files": len(file_names), "lines": totals["lines"], "clean": totals["clean"],
            "blank": totals["blank"],
            "quarantined": {r: totals[f"q_{r}"] for r in REASONS if totals[f"q_{r}"]}}


# ----------------------------------------------------------------------------- merge

def merge_day(root: LakePath, day: date, file_names: list[str], db: Database, run_id: str, *, events: bool = True
              ) -> dict[str, Any]:
    """Dedupe + sort the day's staged rows and ``listen_events``, publish ``daily.parquet`` + quarantine,
    update the registry, then mark the events loaded (``events=False`` leaves Mongo's events out)."""
    started = time.monotonic()
    registry.ensure_indexes(db)
    work = work_dir(root, day)
    dest = root / "listens" / f"date={day.isoformat()}" / FILE_NAME
    rel = storage.relative(dest, root)
    q_dest = root / "quarantine" / PRODUCER / f"date={day.isoformat()}" / "part-00000.parquet"
    # the events are read before anything is written, so only events this file holds are marked loaded
    api_rows, api_ids = (listen_events.day_table(db, day, STAGED_SCHEMA, file_no=len(file_names),
                                                 line_no=lambda i: i)
                         if events else (STAGED_SCHEMA.empty_table(), []))
    if not file_names and not api_ids:
        kept = "kept" if dest.exists() else "none"
        log.info("%s: no landing data and no listen_events; the existing daily file is %s", day, kept)
        return {"date": day.isoformat(), "status": "no_data", "rows": 0}

    staged, quarantined = [api_rows], [schema.QUARANTINE.empty_table()]
    for name in sorted(file_names):
        for target, bucket in ((work / _staged_name(name), staged), (work / _quarantine_name(name), quarantined)):
            if not target.exists():
                raise FileNotFoundError(f"{target} is missing: the clean task for {name} has not completed")
            with target.open("rb") as fh:
                bucket.append(pq.read_table(fh))
    rows = pa.concat_tables([t.cast(STAGED_SCHEMA) for t in staged])
    rows_in = rows.num_rows
    rows = rows.sort_by([("user_id", "ascending"), ("ts", "ascending"), ("track_id", "ascending"),
                         ("file_no", "ascending"), ("line_no", "ascending")])
    rows = _drop_duplicate_keys(rows)
    duplicates = rows_in - rows.num_rows
    quarantine = pa.concat_tables(quarantined).sort_by([("source_file", "ascending"), ("line_no", "ascending")])

    scratch = scratch_dirs.make("daily-merge-")
    try:
        status = "loaded"
        if rows.num_rows:
            local = scratch / FILE_NAME
            pq.write_table(rows.select(schema.LISTENS.names).cast(schema.LISTENS), local, **schema.PARQUET_OPTIONS)
            info = storage.sha256_file(local)
            current = registry.get(db, rel)
            if not (current and current.get("sha256") == info.sha256 and dest.exists()):
                storage.publish_file(local, dest)
            registry.record(db, [registry.PartitionRecord(path=rel, dataset=DATASET, date=day.isoformat(),
                                                          producer=PRODUCER, rows=rows.num_rows, bytes=info.bytes,
                                                          sha256=info.sha256, run_id=run_id)])
        else:
            # Landing files exist but yield no event: this producer's file for D must go.
            status = "empty"
            storage.delete(dest)
            registry.forget(db, [rel])
        if quarantine.num_rows:
            local = scratch / "quarantine.parquet"
            pq.write_table(quarantine, local, **schema.PARQUET_OPTIONS)
            storage.publish_file(local, q_dest)
        else:
            storage.delete(q_dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # only now does the lake hold the day (an event dropped as a duplicate is held by its twin)
    marked = listen_events.mark_loaded(db, api_ids) if api_ids else 0
    if events:
        listen_events.ensure_ttl(db, settings.listen_events_retention())
    reasons = Counter(quarantine.column("reason").to_pylist())
    result = {"date": day.isoformat(), "status": status, "files": len(file_names), "rows": rows.num_rows,
              "listen_events": len(api_ids), "marked_loaded": marked, "duplicates": duplicates, "quarantined": {r: reasons[r] for r in REASONS if reasons[r]},
              "path": rel, "seconds": round(time.monotonic() - started, 3)}
    log.info("%s: %s %d rows into %s, %d duplicates dropped, %d lines quarantined %s (%.2f s)", day, status,
             rows.num_rows, rel, duplicates, quarantine.num_rows, result["quarantined"], result["seconds"])
    return result


def _drop_duplicate_keys(rows: pa.Table) -> pa.Table:
    """Rows sorted by the event key: keep the first row of each (user_id, ts, track_id)."""
    n = rows.num_rows
    if n < 2:
        return rows
    same = pc.and_(
        pc.and_(pc.equal(rows["user_id"].slice(1), rows["user_id"].slice(0, n - 1)),
                pc.equal(rows["ts"].slice(1), rows["ts"].slice(0, n - 1))),
        pc.equal(rows["track_id"].slice(1), rows["track_id"].slice(0, n - 1)),
    )
    keep = pa.concat_arrays([pa.array([True]), pc.invert(same).combine_chunks()])
    return rows.filter(keep)


def cleanup_work(root: LakePath, day: date) -> None:
    for path in storage.list_files(work_dir(root, day)):
        storage.delete(path)


def process_day(root: LakePath, day: date, db: Database, run_id: str) -> dict[str, Any]:
    """All three steps in one process."""
    chunks = plan_day(root, day)
    files = sorted(name for chunk in chunks for name in chunk)
    for chunk in chunks:
        clean_files(root, day, chunk, files)
    result = merge_day(root, day, files, db, run_id)
    cleanup_work(root, day)
    return result
