"""Streaming clean of Last.fm-1K-format listening logs (design §4).

The events TSV is read in byte blocks (never whole); each block is split into lines and
cleaned with vectorized Arrow kernels. Every line ends up in exactly one place: a clean
row (staged Parquet, with its line number), or a quarantine record with its reason.
Exact duplicate events are dropped later, globally, by :mod:`musicrec.lake.partition`.

Quarantine reasons, in precedence order (a line gets the first that applies):
``line_too_long`` > ``invalid_utf8`` > ``column_count`` > ``empty_user`` > ``bad_user_id`` >
``bad_timestamp`` > ``empty_track`` > ``bad_track_id`` > ``bad_artist_id``.

* ``line_too_long``: over ``max_line_bytes`` (64 KiB); only its first 1 KiB is kept, and a line
  longer than a read block is skipped chunk by chunk, never held whole in memory.
* ``bad_*_id``: an id that a store cannot hold (:func:`musicrec.ids.id_problem`: over 64 UTF-8
  bytes, Milvus' VARCHAR(64) key, or a control character). The track id checked is the TSV's
  MBID column; ids derived from artist and title are always 36 characters.
* ``bad_timestamp``: not in the format, or not a real instant by calendar rules (a day past the
  end of its month, Feb 29 of a non-leap year, hour 24, a leap second :60, year 0). Arrow's
  ``strptime`` accepts some of these and shifts them (2009-02-30 becomes 2009-03-02), so each
  parsed value's fields are compared with the digits of the text, vectorised; the rare line
  that is not fixed-width or does not compare equal is decided by Python's ``datetime.strptime``.
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

from musicrec.ids import bad_ids, derived_track_id, id_problem, may_hold_control_chars
from musicrec.lake import schema

log = logging.getLogger(__name__)

REASONS = ("line_too_long", "invalid_utf8", "column_count", "empty_user", "bad_user_id", "bad_timestamp",
           "empty_track", "bad_track_id", "bad_artist_id")
EVENTS_MEMBER = "userid-timestamp-artid-artname-traid-traname.tsv"
PROFILES_MEMBER = "userid-profile.tsv"
LASTFM_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
BLOCK_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024  # a Last.fm line is ~200 bytes; anything near this is not an event
KEPT_PREFIX_BYTES = 1024  # what the quarantine keeps of a line_too_long
_TS_WIDTH = 20  # len("2009-05-04T23:08:57Z")


@dataclass(frozen=True)
class TooLongLine:
    """A line over the limit that :func:`iter_blocks` skipped: its first bytes only."""

    prefix: bytes


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

    def __init__(self, source: str, quarantine: QuarantineBuffer, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.source = source
        self.max_line_bytes = max_line_bytes
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
        long_lines = np.flatnonzero(np.diff(offsets) > self.max_line_bytes + 1)  # + its newline
        bad = sorted(set(long_lines.tolist()) | set(_invalid_utf8_lines(block, offsets)))
        if bad:
            ok = np.ones(n, dtype=bool)
            ok[bad] = False
            too_long = set(long_lines.tolist())
            for i in bad:
                if i in too_long:
                    self.reject_too_long(block[offsets[i] : offsets[i] + KEPT_PREFIX_BYTES], int(line_nos[i]))
                else:
                    self._reject(block[offsets[i] : offsets[i + 1]].rstrip(b"\n"), "invalid_utf8",
                                 int(line_nos[i]))
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
        ts_text = pc.utf8_trim_whitespace(cols[1])
        ts_s = pc.strptime(ts_text, format=LASTFM_TS_FORMAT, unit="s", error_is_null=True)
        artist_mbid = pc.utf8_trim_whitespace(cols[2])
        artist = pc.utf8_trim_whitespace(cols[3])
        track_mbid = pc.utf8_trim_whitespace(cols[4])
        title = pc.utf8_trim_whitespace(cols[5])

        chars = may_hold_control_chars(block)  # the id regex runs only on blocks that may need it
        empty_user = pc.equal(user, "").to_numpy(zero_copy_only=False)
        bad_ts = pc.is_null(ts_s).to_numpy(zero_copy_only=False) | not_calendar_exact(ts_text, ts_s)
        empty_track = pc.and_(pc.equal(title, ""), pc.equal(track_mbid, "")).to_numpy(zero_copy_only=False)
        reason = np.full(len(user), "", dtype=object)
        reason[bad_ids(artist_mbid, chars)] = "bad_artist_id"
        reason[bad_ids(track_mbid, chars)] = "bad_track_id"
        reason[empty_track] = "empty_track"
        reason[bad_ts] = "bad_timestamp"
        reason[bad_ids(user, chars)] = "bad_user_id"
        reason[empty_user] = "empty_user"
        bad = reason != ""
        if bad.any():
            bad_idx = np.flatnonzero(bad)
            # the rejected rows' dates; a bad timestamp's parsed value may be a shifted (or year 0)
            # day, so its date is unknown
            dated = bad_idx[~bad_ts[bad_idx]]
            days = dict(zip(dated.tolist(), ts_s.take(pa.array(dated)).cast(pa.date32()).to_pylist(), strict=True))
            for i in bad_idx:
                day = days.get(int(i))
                self._reject(text[int(i)].as_py(), str(reason[i]), int(line_nos[i]),
                             day.isoformat() if day is not None else "unknown")
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

    def reject_too_long(self, prefix: bytes, line_no: int) -> None:
        """Quarantine a line over ``max_line_bytes`` by its first bytes (the rest is not kept)."""
        self._reject(prefix[:KEPT_PREFIX_BYTES], "line_too_long", line_no)

    def _reject(self, raw: bytes | str, reason: str, line_no: int, day: str = "unknown") -> None:
        self.stats.quarantined[reason] += 1
        self.quarantine.add(raw, reason, line_no, day)


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_YEAR_1 = -62135596800  # 0001-01-01T00:00:00Z in epoch seconds


def not_calendar_exact(text: pa.Array, ts: pa.Array) -> np.ndarray:
    """True where ``ts`` (``strptime(text)``, unit s) is not exactly what ``text`` says.

    Arrow's ``strptime`` rejects a month of 13, a day of 0 or 32, hour 24 or minute 60, but
    normalises a day past the end of its month (2009-02-30 becomes 2009-03-02) and a leap second
    (23:59:60 becomes the next day's 00:00:00), and takes year 0. So for the fixed-width text
    (``YYYY-MM-DDTHH:MM:SSZ``) the day digits are checked against the month's length (leap years
    by the Gregorian rule) and the second digits against 59, with numpy over the array's own
    buffers; rows that are not fixed-width (``2009-5-4T3:08:57Z``) or look wrong are decided by
    Python's ``datetime.strptime``. Null timestamps are False here (the caller rejects them)."""
    n = len(text)
    if n == 0:
        return np.zeros(0, dtype=bool)
    parsed = pc.is_valid(ts).to_numpy(zero_copy_only=False)
    secs = pc.fill_null(ts.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + n + 1]
    data_buf = text.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    exact = (np.diff(offsets) == _TS_WIDTH) & parsed & (secs >= _YEAR_1)
    rows = np.flatnonzero(exact)
    if rows.size:
        o = offsets[rows].astype(np.int64)

        def num(pos: int, width: int, at: np.ndarray) -> np.ndarray:
            value = np.zeros(len(at), dtype=np.int64)
            for k in range(width):
                value = value * 10 + (data[at + pos + k].astype(np.int64) - 48)
            return value

        day, second = num(8, 2, o), num(17, 2, o)
        late = np.flatnonzero(day > 28)  # only these can run past the end of their month
        ok = second <= 59
        if late.size:
            year, month = num(0, 4, o[late]), num(5, 2, o[late])
            leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
            month_days = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + ((month == 2) & leap)
            ok[late] &= day[late] <= month_days
        exact[rows] = ok
    suspect = np.flatnonzero(parsed & ~exact)
    for i in suspect:  # rare: Python decides
        try:
            want = datetime.strptime(text[int(i)].as_py(), LASTFM_TS_FORMAT)
        except ValueError:
            continue
        if (want - datetime(1970, 1, 1)).total_seconds() == secs[i]:
            exact[i] = True
    return parsed & ~exact


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


def iter_blocks(stream: IO[bytes], block_bytes: int = BLOCK_BYTES, max_line_bytes: int = MAX_LINE_BYTES
                ) -> Iterator[tuple[bytes | TooLongLine, int]]:
    """Yield (block of whole lines without the final newline, first line number [1-based]).

    A line that grows past ``max_line_bytes`` without a newline is yielded as a
    :class:`TooLongLine` with its line number, and the rest of it is read and dropped block by
    block: memory stays bounded by ``block_bytes + max_line_bytes`` whatever the input. (A long
    line that still fits into one block comes out inside the block; the cleaner checks lengths.)
    """
    line_no = 1
    carry = b""
    skipping = False
    while True:
        chunk = stream.read(block_bytes)
        if not chunk:
            break
        if skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                continue
            skipping = False
            line_no += 1
            chunk = chunk[cut + 1 :]
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            if len(carry) > max_line_bytes:
                yield TooLongLine(carry[:KEPT_PREFIX_BYTES]), line_no
                carry, skipping = b"", True
            continue
        block, carry = data[:cut], data[cut + 1 :]
        yield block, line_no
        line_no += block.count(b"\n") + 1
        if len(carry) > max_line_bytes:
            yield TooLongLine(carry[:KEPT_PREFIX_BYTES]), line_no
            carry, skipping = b"", True
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
    max_line_bytes: int = MAX_LINE_BYTES,
) -> CleanStats:
    """Clean an events TSV stream into ``out_dir/part-NNNNN.parquet`` (staged schema)."""
    started = time.monotonic()
    cleaner = EventCleaner(source, quarantine, max_line_bytes)
    stats = cleaner.stats
    out_dir.mkdir(parents=True, exist_ok=True)
    writer: pq.ParquetWriter | None = None
    rows_in_part = 0
    last_log = started
    try:
        for block, first in iter_blocks(stream, block_bytes, max_line_bytes):
            if isinstance(block, TooLongLine):
                stats.lines += 1
                cleaner.reject_too_long(block.prefix, first)
                continue
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
        if id_problem(user):
            quarantine.add(line, "bad_user_id", line_no)
            continue
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
