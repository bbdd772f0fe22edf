"""Global dedupe + sort of staged rows and the split into ``listens/date=D/<producer>.parquet``.

DuckDB sorts the staged rows by (date, user_id, ts, track_id, line_no) with a memory
limit and disk spill, so the sort is bounded whatever the input size. One streaming pass
over the sorted file then drops adjacent duplicate event keys (keeping the first line)
and cuts the stream at date boundaries, so only one output file is open at a time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from musicrec.lake import schema
from musicrec.settings import duckdb_memory_limit

log = logging.getLogger(__name__)


@dataclass
class PartitionFile:
    date: str
    path: Path  # local file ready to publish
    rows: int


@dataclass
class SortStats:
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    files: list[PartitionFile] = field(default_factory=list)
    seconds: float = 0.0


def sort_staged(parts: Iterable[Path], out_file: Path, *, temp_dir: Path, threads: int | None = None) -> int:
    """Sort staged parts into one Parquet file; returns the row count."""
    files = [os.fspath(p) for p in parts]
    if not files:
        pq.write_table(schema.STAGED.empty_table(), out_file)
        return 0
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit='{duckdb_memory_limit()}'")
        con.execute(f"SET temp_directory='{temp_dir}'")
        con.execute(f"SET threads={threads or os.cpu_count() or 2}")
        con.execute("SET TimeZone='UTC'")
        con.execute(
            "COPY (SELECT * FROM read_parquet(?) ORDER BY date, user_id, ts, track_id, line_no) "
            "TO ? (FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE 122880)",
            [files, os.fspath(out_file)],
        )
        return int(con.execute("SELECT count(*) FROM read_parquet(?)", [os.fspath(out_file)]).fetchone()[0])
    finally:
        con.close()


def split_by_date(
    sorted_file: Path,
    out_dir: Path,
    file_name: str,
    *,
    on_file: Callable[[PartitionFile], None] | None = None,
    batch_rows: int = 131072,
) -> SortStats:
    """Stream the sorted file into ``out_dir/date=D/file_name`` files, dropping duplicate keys.

    ``on_file`` is called as each date's file is closed (so publishing overlaps the split).
    """
    started = time.monotonic()
    stats = SortStats()
    reader = pq.ParquetFile(sorted_file)
    writer: pq.ParquetWriter | None = None
    current: PartitionFile | None = None
    prev_key: tuple | None = None

    def close() -> None:
        nonlocal writer, current
        if writer is not None and current is not None:
            writer.close()
            stats.files.append(current)
            if on_file is not None:
                on_file(current)
        writer, current = None, None

    for batch in reader.iter_batches(batch_size=batch_rows):
        stats.rows_in += batch.num_rows
        keep = _first_of_each_key(batch, prev_key)
        prev_key = _last_key(batch)
        table = pa.Table.from_batches([batch]).filter(pa.array(keep))
        stats.duplicates += batch.num_rows - table.num_rows
        if table.num_rows == 0:
            continue
        dates = table.column("date").cast(pa.int32()).to_numpy()
        cuts = np.flatnonzero(np.diff(dates)) + 1
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(dates)], strict=True):
            segment = table.slice(int(start), int(stop - start))
            day = segment.column("date")[0].as_py().isoformat()
            if current is None or current.date != day:
                close()
                path = out_dir / f"date={day}" / file_name
                path.parent.mkdir(parents=True, exist_ok=True)
                current = PartitionFile(date=day, path=path, rows=0)
                writer = pq.ParquetWriter(path, schema.LISTENS, **schema.PARQUET_OPTIONS)
            writer.write_table(segment.select(schema.LISTENS.names).cast(schema.LISTENS))
            current.rows += segment.num_rows
            stats.rows_out += segment.num_rows
    close()
    stats.seconds = time.monotonic() - started
    return stats


def _keys(batch: pa.RecordBatch) -> list[np.ndarray]:
    return [
        np.asarray(batch.column("user_id").to_numpy(zero_copy_only=False), dtype=object),
        batch.column("ts").cast(pa.int64()).to_numpy(),
        np.asarray(batch.column("track_id").to_numpy(zero_copy_only=False), dtype=object),
    ]


def _first_of_each_key(batch: pa.RecordBatch, prev_key: tuple | None) -> np.ndarray:
    """True for rows whose event key differs from the previous row's (sorted input)."""
    n = batch.num_rows
    if n == 0:
        return np.zeros(0, dtype=bool)
    user, ts, track = _keys(batch)
    same = np.zeros(n, dtype=bool)
    same[1:] = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1]) & (track[1:] == track[:-1])
    if prev_key is not None:
        same[0] = (user[0], ts[0], track[0]) == prev_key
    return ~same


def _last_key(batch: pa.RecordBatch) -> tuple | None:
    if batch.num_rows == 0:
        return None
    return (
        batch.column("user_id")[-1].as_py(),
        pc.cast(batch.column("ts"), pa.int64())[-1].as_py(),
        batch.column("track_id")[-1].as_py(),
    )
