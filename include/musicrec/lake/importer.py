"""The ``listens_import`` steps over a lake root: clean a raw dump, then partition it.

Each step is idempotent: it derives everything from its inputs, replaces only the files
its producer owns (atomically), removes its own files that a new input no longer yields,
and records what it wrote in the ``lake_partitions`` registry.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pymongo.database import Database

from musicrec import registry
from musicrec import scratch as scratch_dirs
from musicrec.lake import schema, storage
from musicrec.lake.clean import (
    EVENTS_MEMBER,
    PROFILES_MEMBER,
    REASONS,
    QuarantineBuffer,
    clean_events,
    open_archive_members,
    parse_profiles,
)
from musicrec.lake.download import MANIFEST
from musicrec.lake.partition import PartitionFile, sort_staged, split_by_date
from musicrec.lake.storage import LakePath
from musicrec.sources import BoundedReader, ByteBudget, contained

log = logging.getLogger(__name__)

CLEAN_MARKER = "_clean.json"


def producer_of(dataset: str) -> str:
    return f"import-{dataset}"


def work_dir(root: LakePath, dataset: str) -> LakePath:
    return contained(root / "work" / "listens_import", dataset)  # dataset is a param: stays inside work/


DEFAULT_MAX_UNPACKED_BYTES = 64 * 2**30  # the real Last.fm-1K dump unpacks to ~2.5 GB


def clean_raw(root: LakePath, dataset: str, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> dict[str, Any]:
    """Clean ``raw/<dataset>/<file>`` into staged parts under ``work/``, plus quarantine files.

    At most ``max_unpacked_bytes`` are read out of the archive (all members together, counted as
    they are decompressed): a gzip bomb is refused with :class:`musicrec.sources.SourceNotAllowed`."""
    manifest = storage.read_json(root / "raw" / dataset / MANIFEST)
    raw = contained(root / "raw", dataset, manifest["file"])  # the name came from a URL: stays inside raw/
    work = work_dir(root, dataset)
    marker = work / CLEAN_MARKER
    if marker.exists():
        done = storage.read_json(marker)
        if done.get("raw_sha256") == manifest["sha256"] and all(
            (work / "clean" / p).exists() for p in done.get("parts", [])
        ):
            log.info("clean: %s already cleaned from sha256 %s; reusing %d parts",
                     raw.name, manifest["sha256"], len(done["parts"]))
            return done

    producer = producer_of(dataset)
    scratch = scratch_dirs.make("clean-")  # sweeps clean-* folders of killed runs first
    try:
        quarantine = QuarantineBuffer(source_file=f"raw/{dataset}/{manifest['file']}")
        profile_quarantine = QuarantineBuffer(source_file=f"raw/{dataset}/{manifest['file']}")
        stats = None
        profiles = None
        budget = ByteBudget(max_unpacked_bytes, f"raw/{dataset}/{manifest['file']}")
        with raw.open("rb") as fh, open_archive_members(fh, raw.name) as members:
            for name, unbounded in members:
                stream = BoundedReader(unbounded, budget)
                base = name.rsplit("/", 1)[-1]
                if base == PROFILES_MEMBER:
                    profiles = parse_profiles(stream, profile_quarantine)
                    log.info("clean: %d user profiles from %s", profiles.num_rows, name)
                elif base.endswith(".tsv") and (base == EVENTS_MEMBER or stats is None):
                    quarantine.source_file = f"raw/{dataset}/{manifest['file']}:{name}"
                    stats = clean_events(stream, scratch / "clean", source=dataset, source_file=quarantine.source_file,
                                         quarantine=quarantine)
                else:
                    log.info("clean: skipping archive member %s", name)
        if stats is None:
            raise ValueError(f"raw/{dataset}/{manifest['file']} holds no events TSV (expected {EVENTS_MEMBER})")

        # Publish staged parts, then quarantine; the marker goes last (it means "complete").
        clean_dir = work / "clean"
        for old in storage.list_files(clean_dir, "*.parquet"):
            if old.name not in stats.parts:
                storage.delete(old)
        for part in stats.parts:
            storage.publish_file(scratch / "clean" / part, clean_dir / part)
        if profiles is not None:
            local = scratch / "profiles.parquet"
            pq.write_table(profiles, local, **schema.PARQUET_OPTIONS)
            storage.publish_file(local, work / "profiles.parquet")
        elif (work / "profiles.parquet").exists():
            storage.delete(work / "profiles.parquet")
        written = _publish_quarantine(root, producer, quarantine, scratch)
        written += _publish_quarantine(root, producer + "-profiles", profile_quarantine, scratch)

        result = stats.as_dict()
        result.update(
            dataset=dataset,
            raw_file=manifest["file"],
            raw_sha256=manifest["sha256"],
            parts=stats.parts,
            profiles=profiles.num_rows if profiles is not None else 0,
            profiles_quarantined=len(profile_quarantine),
            quarantine_files=written,
        )
        storage.write_json_atomic(marker, result)
        _log_clean(result)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _publish_quarantine(root: LakePath, producer: str, buffer: QuarantineBuffer, scratch: Path) -> list[str]:
    """Replace this producer's quarantine files with the ones of this run."""
    prefix = contained(root / "quarantine", producer)  # producer carries the dataset param
    tables = buffer.tables()
    wanted = {f"date={day}/part-00000.parquet" for day in tables}
    for old in storage.list_files(prefix, "*.parquet"):
        if storage.relative(old, prefix) not in wanted:
            storage.delete(old)
    written = []
    for day, table in tables.items():
        local = scratch / "quarantine" / producer / f"date={day}.parquet"
        local.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, local, **schema.PARQUET_OPTIONS)
        dest = prefix / f"date={day}" / "part-00000.parquet"
        storage.publish_file(local, dest)
        written.append(storage.relative(dest, root))
    return written


def _log_clean(result: dict[str, Any]) -> None:
    log.info("clean summary: %d lines, %d clean, %d quarantined in %.1f s",
             result["lines"], result["clean"], result["quarantined_total"], result["seconds"])
    for reason in REASONS:
        log.info("  quarantined %-14s %d", reason, result["quarantined"].get(reason, 0))


def partition_clean(root: LakePath, dataset: str, db: Database, run_id: str) -> dict[str, Any]:
    """Dedupe, sort and write ``listens/date=D/import-<dataset>.parquet`` + ``profiles/users.parquet``."""
    started = time.monotonic()
    work = work_dir(root, dataset)
    marker = storage.read_json(work / CLEAN_MARKER)
    producer = producer_of(dataset)
    file_name = f"{producer}.parquet"
    registry.ensure_indexes(db)
    scratch = scratch_dirs.make("partition-")
    try:
        parts = []
        for name in marker["parts"]:
            src = work / "clean" / name
            parts.append(storage.local_path(src) if storage.is_local(src)
                         else storage.fetch_to_local(src, scratch / "clean" / name))
        sorted_file = scratch / "sorted.parquet"
        spill = scratch / "spill"
        spill.mkdir()
        rows = sort_staged(parts, sorted_file, temp_dir=spill)
        log.info("partition: sorted %d staged rows in %.1f s", rows, time.monotonic() - started)

        records: list[registry.PartitionRecord] = []
        unchanged = Counter()

        def publish(pf: PartitionFile) -> None:
            dest = root / "listens" / f"date={pf.date}" / file_name
            rel = storage.relative(dest, root)
            info = storage.sha256_file(pf.path)
            current = registry.get(db, rel) if not storage.is_local(dest) else None
            if current and current.get("sha256") == info.sha256 and dest.exists():
                unchanged["files"] += 1  # identical object already in place: skip the upload
                pf.path.unlink()
            else:
                storage.publish_file(pf.path, dest)
            records.append(registry.PartitionRecord(path=rel, dataset=dataset, date=pf.date, producer=producer,
                                                    rows=pf.rows, bytes=info.bytes, sha256=info.sha256,
                                                    run_id=run_id))
            if len(records) % 200 == 0:
                log.info("partition: %d partitions written (latest %s)", len(records), pf.date)

        stats = split_by_date(sorted_file, scratch / "out", file_name, on_file=publish)
        written = registry.record(db, records)

        # Files of this producer that this input no longer yields are removed with their records.
        new_paths = {r.path for r in records}
        stale = sorted(registry.paths_of_producer(db, producer) - new_paths)
        for rel in stale:
            storage.delete(root / rel)
        registry.forget(db, stale)

        profiles_rows = 0
        if (work / "profiles.parquet").exists():
            src = work / "profiles.parquet"
            local = scratch / "users.parquet"
            storage.fetch_to_local(src, local)
            profiles_rows = pq.ParquetFile(local).metadata.num_rows
            dest = root / "profiles" / "users.parquet"
            info = storage.publish_file(local, dest)
            registry.record(db, [registry.PartitionRecord(
                path=storage.relative(dest, root), dataset=dataset, date=None, producer=producer,
                rows=profiles_rows, bytes=info.bytes, sha256=info.sha256, run_id=run_id)])

        result = {
            "dataset": dataset,
            "rows_in": stats.rows_in,
            "rows": stats.rows_out,
            "duplicates": stats.duplicates,
            "partitions": len(records),
            "registry_written": written,
            "stale_removed": len(stale),
            "first_date": records[0].date if records else None,
            "last_date": records[-1].date if records else None,
            "profiles": profiles_rows,
            "seconds": round(time.monotonic() - started, 3),
        }
        log.info("partition summary: %d rows in %d partitions (%s .. %s), %d duplicate events dropped, "
                 "%d registry documents written, %d stale files removed, %.1f s",
                 result["rows"], result["partitions"], result["first_date"], result["last_date"],
                 result["duplicates"], written, len(stale), result["seconds"])
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
