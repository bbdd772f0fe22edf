"""Streaming clean of Last.fm-1K-format listening logs (design §4).

The events TSV is read in byte blocks (never whole); each block is split into lines and
cleaned with vectorized Arrow kernels. Every line ends up in exactly one place: a clean
row (staged Parquet, with its line number), or a quarantine record with its reason.
Exact duplicate events are dropped later, globally, by :mod:`musicrec.lake.partition`.

Quarantine reasons, in precedence order (a line gets the first that applies):
``invalid_utf8`` > ``column_count`` > ``empty_user`` > ``bad_timestamp`` > ``empty_track``.
"""

from __future__ import annotations

import base64
import gzip
import logging
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from musicrec.ids import derived_track_id
from musicrec.lake import schema

log = logging.getLogger(__name__)

REASONS = ("invalid_utf8", "column_count", "empty_user", "bad_timestamp", "empty_track")
EVENTS_MEMBER = "userid-timestamp-artid-artname-traid-traname.tsv"
PROFILES_MEMBER = "userid-profile.tsv"
LASTFM_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
BLOCK_BYTES = 16 * 1024 * 1024


@dataclass
class CleanStats:
    lines: int = 0
    clean: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    parts: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "clean": self.clean,
            "quarantined": {r: self.quarantined.get(r, 0) for r in REASONS},
            "quarantined_total": sum(self.quarantined.values()),
            "parts": len(self.parts),
            "seconds": round(self.seconds, 3),
        }


class QuarantineBuffer:
    """Collects rejected lines; ``tables()`` groups them by date for one file per partition."""

    def __init__(self, source_file: str) -> None:
        self.source_file = source_file
        self._cols: dict[str, list[Any]] = {n: [] for n in schema.QUARANTINE.names}

    def add(self, raw: bytes | str, reason: str, line_no: int, day: str = "unknown") -> None:
        if isinstance(raw, bytes):
            try:
                text, encoding = raw.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        else:
            text, encoding = raw, "utf-8"
        for name, value in (("line", text), ("encoding", encoding), ("reason", reason),
                            ("source_file", self.source_file), ("line_no", line_no), ("date", day)):
            self._cols[name].append(value)

    def __len__(self) -> int:
        return len(self._cols["line"])

    def table(self) -> pa.Table:
        """All records, in the order they were added."""
        return pa.table(self._cols, schema=schema.QUARANTINE)

    def tables(self) -> dict[str, pa.Table]:
        """Records grouped by event date (``unknown`` when it could not be read), by line number."""
        if not len(self):
            return {}
        table = self.table().sort_by([("line_no", "ascending")])
        days = table.column("date")
        return {d: table.filter(pc.equal(days, d)) for d in sorted(pc.unique(days).to_pylist())}


class _TrackIdCache:
    """Derived track ids for (artist, title) pairs, computed once per distinct pair."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def derive(self, artist: pa.Array, title: pa.Array) -> pa.Array:
        pairs = pc.binary_join_element_wise(artist, title, "\t")
        uniques = pc.unique(pairs)
        ids = self._ids
        values = []
        for pair in uniques.to_pylist():
            tid = ids.get(pair)
            if tid is None:
                a, _, t = pair.partition("\t")
                tid = ids[pair] = derived_track_id(a, t)
            values.append(tid)
        return pa.array(values, pa.string()).take(pc.index_in(pairs, value_set=uniques))


def _null_if_empty(arr: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


class EventCleaner:
    """Cleans blocks of lines into staged Arrow tables plus quarantine records."""

    def __init__(self, source: str, quarantine: QuarantineBuffer) -> None:
        self.source = source
        self.quarantine = quarantine
        self.track_ids = _TrackIdCache()
        self.stats = CleanStats()

    def clean_block(self, block: bytes, first_line_no: int) -> pa.Table | None:
        # Lines as one Arrow array over the block's own buffer: no Python object per line.
        buf = np.frombuffer(block, dtype=np.uint8)
        newlines = np.flatnonzero(buf == 10)
        n = len(newlines) + 1
        self.stats.lines += n
        offsets = np.empty(n + 1, dtype=np.int32)
        offsets[0], offsets[1:-1], offsets[-1] = 0, newlines + 1, len(block)
        lines = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(block)])
        line_nos = np.arange(first_line_no, first_line_no + n, dtype=np.int64)
        bad = _invalid_utf8_lines(block, offsets)
        if bad:
            ok = np.ones(n, dtype=bool)
            ok[bad] = False
            for i in bad:
                self._reject(block[offsets[i] : offsets[i + 1]].rstrip(b"\n"), "invalid_utf8", int(line_nos[i]))
            lines, line_nos = lines.filter(pa.array(ok)), line_nos[ok]
        if len(lines) == 0:
            return None
        text = pc.utf8_rtrim(lines.cast(pa.string()), characters="\r\n")
        fields = pc.split_pattern(text, "\t")
        six = pc.equal(pc.list_value_length(fields), 6).to_numpy(zero_copy_only=False)
        if not six.all():
            for i in np.flatnonzero(~six):
                self._reject(text[int(i)].as_py(), "column_count", int(line_nos[i]))
            fields, text, line_nos = fields.filter(pa.array(six)), text.filter(pa.array(six)), line_nos[six]
        if len(fields) == 0:
            return None
        cols = [pc.list_element(fields, i) for i in range(6)]
        user = pc.utf8_trim_whitespace(cols[0])
        ts_s = pc.strptime(pc.utf8_trim_whitespace(cols[1]), format=LASTFM_TS_FORMAT, unit="s", error_is_null=True)
        artist_mbid = pc.utf8_trim_whitespace(cols[2])
        artist = pc.utf8_trim_whitespace(cols[3])
        track_mbid = pc.utf8_trim_whitespace(cols[4])
        title = pc.utf8_trim_whitespace(cols[5])

        empty_user = pc.equal(user, "").to_numpy(zero_copy_only=False)
        bad_ts = pc.is_null(ts_s).to_numpy(zero_copy_only=False)
        empty_track = pc.and_(pc.equal(title, ""), pc.equal(track_mbid, "")).to_numpy(zero_copy_only=False)
        reason = np.full(len(user), "", dtype=object)
        reason[empty_track] = "empty_track"
        reason[bad_ts] = "bad_timestamp"
        reason[empty_user] = "empty_user"
        bad = reason != ""
        if bad.any():
            bad_idx = np.flatnonzero(bad)
            ts_py = ts_s.take(pa.array(bad_idx)).to_pylist()  # only the rejected rows' timestamps
            for i, t in zip(bad_idx, ts_py, strict=True):
                day = t.date().isoformat() if isinstance(t, datetime) else "unknown"
                self._reject(text[int(i)].as_py(), str(reason[i]), int(line_nos[i]), day)
            keep = pa.array(~bad)
            user, ts_s, artist_mbid, artist, track_mbid, title = (
                c.filter(keep) for c in (user, ts_s, artist_mbid, artist, track_mbid, title)
            )
            line_nos = line_nos[~bad]
        n_ok = len(user)
        if n_ok == 0:
            return None

        no_mbid = pc.equal(track_mbid, "")
        track_id = track_mbid
        if pc.any(no_mbid).as_py():
            # Derive ids only for the rows without a MusicBrainz id.
            derived = self.track_ids.derive(artist.filter(no_mbid), title.filter(no_mbid))
            track_id = pc.replace_with_mask(track_mbid, no_mbid, derived)
        ts = ts_s.cast(pa.timestamp("s", tz="UTC")).cast(schema.TS)
        table = pa.table(
            {
                "user_id": user,
                "track_id": track_id,
                "artist_id": _null_if_empty(artist_mbid),
                "artist_name": artist,
                "track_name": title,
                "album": pa.nulls(n_ok, pa.string()),
                "duration_s": pa.nulls(n_ok, pa.float64()),
                "ts": ts,
                "action": pa.repeat(pa.scalar("listen", pa.string()), n_ok),
                "source": pa.repeat(pa.scalar(self.source, pa.string()), n_ok),
                "line_no": pa.array(line_nos, pa.int64()),
                "date": ts_s.cast(pa.date32()),
            }
        )
        self.stats.clean += n_ok
        return table.cast(schema.STAGED)

    def _reject(self, raw: bytes | str, reason: str, line_no: int, day: str = "unknown") -> None:
        self.stats.quarantined[reason] += 1
        self.quarantine.add(raw, reason, line_no, day)


def _invalid_utf8_lines(block: bytes, offsets: np.ndarray) -> list[int]:
    """Indices of the lines that are not valid UTF-8 (each byte is decoded about once)."""
    bad: list[int] = []
    view = memoryview(block)
    pos = 0
    while pos < len(block):
        try:
            str(view[pos:], "utf-8")
            break
        except UnicodeDecodeError as exc:
            line = int(np.searchsorted(offsets, pos + exc.start, side="right")) - 1
            bad.append(line)
            pos = int(offsets[line + 1])
    return bad


def iter_blocks(stream: IO[bytes], block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Yield (block of whole lines without the final newline, first line number [1-based])."""
    line_no = 1
    carry = b""
    while True:
        chunk = stream.read(block_bytes)
        if not chunk:
            break
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        block, carry = data[:cut], data[cut + 1 :]
        yield block, line_no
        line_no += block.count(b"\n") + 1
    if carry:
        yield carry, line_no


def clean_events(
    stream: IO[bytes],
    out_dir: Path,
    *,
    source: str,
    source_file: str,
    quarantine: QuarantineBuffer,
    rows_per_part: int = 2_000_000,
    block_bytes: int = BLOCK_BYTES,
) -> CleanStats:
    """Clean an events TSV stream into ``out_dir/part-NNNNN.parquet`` (staged schema)."""
    started = time.monotonic()
    cleaner = EventCleaner(source, quarantine)
    stats = cleaner.stats
    out_dir.mkdir(parents=True, exist_ok=True)
    writer: pq.ParquetWriter | None = None
    rows_in_part = 0
    last_log = started
    try:
        for block, first in iter_blocks(stream, block_bytes):
            table = cleaner.clean_block(block, first)
            if table is None:
                continue
            if writer is None or rows_in_part >= rows_per_part:
                if writer is not None:
                    writer.close()
                part = out_dir / f"part-{len(stats.parts):05d}.parquet"
                stats.parts.append(part.name)
                writer = pq.ParquetWriter(part, schema.STAGED, compression="lz4")
                rows_in_part = 0
            writer.write_table(table)
            rows_in_part += table.num_rows
            now = time.monotonic()
            if now - last_log > 10:
                last_log = now
                log.info("clean: %d lines, %d clean, %d quarantined (%.0f lines/s)", stats.lines, stats.clean,
                         sum(stats.quarantined.values()), stats.lines / (now - started))
    finally:
        if writer is not None:
            writer.close()
    stats.seconds = time.monotonic() - started
    return stats


def parse_profiles(stream: IO[bytes], quarantine: QuarantineBuffer) -> pa.Table:
    """Parse ``userid-profile.tsv`` (header ``#id gender age country registered``)."""
    cols: dict[str, list[Any]] = {n: [] for n in schema.PROFILES.names}
    for line_no, raw in enumerate(stream.read().split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip() or raw.startswith(b"#"):
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            quarantine.add(raw, "invalid_utf8", line_no)
            continue
        parts = line.split("\t")
        if len(parts) != 5 or not parts[0].strip():
            quarantine.add(line, "column_count" if len(parts) != 5 else "empty_user", line_no)
            continue
        user, gender, age, country, registered = (p.strip() for p in parts)
        cols["user_id"].append(user)
        cols["gender"].append(gender or None)
        cols["age"].append(int(age) if age.isdigit() else None)
        cols["country"].append(country or None)
        cols["registered"].append(_parse_registered(registered))
    return pa.table(cols, schema=schema.PROFILES).sort_by("user_id")


def _parse_registered(value: str) -> Any:
    if not value:
        return None
    for fmt in ("%b %d, %Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


@contextmanager
def open_archive_members(fh: IO[bytes], name: str) -> Iterator[Iterator[tuple[str, IO[bytes]]]]:
    """Yield (member name, stream) for a ``.tar.gz``/``.tgz``/``.tar``, ``.tsv.gz`` or ``.tsv`` source."""
    lower = name.lower()
    if lower.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(fileobj=fh, mode="r|*") as tar:
            def members() -> Iterator[tuple[str, IO[bytes]]]:
                for member in tar:
                    if member.isfile():
                        stream = tar.extractfile(member)
                        if stream is not None:
                            yield member.name, stream
            yield members()
    elif lower.endswith(".gz"):
        with gzip.open(fh, "rb") as stream:
            yield iter([(name[:-3], stream)])
    else:
        yield iter([(name, fh)])
