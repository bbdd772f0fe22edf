"""The Last.fm-1K-format archive: events TSV (with planted bad lines) + profiles, as a tar.gz.

The events member is written in two passes over the (cheap, deterministic) per-user event
generator: pass 1 only adds up byte lengths, so the tar header can carry the exact size; pass 2
formats each user's lines with Arrow kernels and streams them through gzip on a second thread.
Nothing but one user's lines (plus a bounded queue) is ever in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import queue
import random
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from musicrec.sample import names
from musicrec.sample.presets import Preset
from musicrec.sample.taste import S_PLANT, S_PROFILE, Catalog, Users, epoch_day, user_events

log = logging.getLogger(__name__)

ARCHIVE = "lastfm-dataset-1K.tar.gz"
ROOT = "lastfm-dataset-1K"
EVENTS_MEMBER = "userid-timestamp-artid-artname-traid-traname.tsv"
PROFILES_MEMBER = "userid-profile.tsv"
PROFILES_HEADER = "#id\tgender\tage\tcountry\tregistered\n"
# Quarantine reasons in the cleaner's precedence order; a planted line has exactly one problem.
REASONS = ("invalid_utf8", "column_count", "empty_user", "bad_timestamp", "empty_track")
DUPLICATE = "duplicate"
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# A fixed member/gzip mtime keeps the archive byte-identical between runs (2009-05-05 UTC).
ARCHIVE_MTIME = 1241481600
PREFIX = 33  # len("user_000001\t") + len("2009-05-04T23:08:57Z\t")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_QUEUE_BYTES = 8 << 20
# Up to this many events, pass 1 keeps each user's arrays for pass 2 instead of redrawing them.
CACHE_MAX_EVENTS = 3_000_000


# --- planted lines ------------------------------------------------------------------------------
@dataclass
class Plant:
    local: int  # index into the user's ascending events
    kind: str  # one of REASONS or DUPLICATE
    variant: int


def plan_plants(p: Preset, users: Users, seed: int) -> dict[int, list[Plant]]:
    """Pick distinct events to corrupt/duplicate: ``malformed_each`` per reason, ``duplicates`` copies."""
    rng = np.random.default_rng([seed, S_PLANT])
    total = int(users.events.sum())
    ends = np.cumsum(users.events)
    starts = ends - users.events
    a = users.anchor  # keep the events that pin the first/last date valid
    keep_valid = {int(starts[a]), int(ends[a] - 1)}
    n_plant = len(REASONS) * p.malformed_each + p.duplicates
    if n_plant + len(keep_valid) > total // 2:
        raise ValueError(f"preset {p.name!r}: too many planted lines for {total} events")
    picks = rng.choice(total, size=n_plant + len(keep_valid), replace=False)
    picks = np.array([g for g in picks.tolist() if g not in keep_valid][:n_plant], dtype=np.int64)
    kinds = [r for r in REASONS for _ in range(p.malformed_each)] + [DUPLICATE] * p.duplicates
    variants = rng.integers(0, 1 << 30, size=n_plant)
    owner = np.searchsorted(ends, picks, side="right")
    plan: dict[int, list[Plant]] = {}
    for g, u, kind, v in zip(picks.tolist(), owner.tolist(), kinds, variants.tolist(), strict=True):
        plan.setdefault(u, []).append(Plant(local=g - int(starts[u]), kind=kind, variant=v))
    return plan


def fmt_ts(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(TS_FORMAT)


def planted_line(kind: str, variant: int, fields: list[str]) -> bytes:
    """The bytes of one corrupted line (with its newline): exactly one problem, of ``kind``."""
    rnd = random.Random(variant)
    uid, ts, art_mbid, artist, trk_mbid, title = fields
    if kind == "invalid_utf8":  # a latin-1 / broken byte in the title, otherwise fine
        raw = title.encode()
        bad = rnd.choice([raw + b" caf\xe9", b"\xff" + raw, raw + b" \xe6\x97", b"Caf\xe9 " + raw, raw + b"\xc3("])
        return b"\t".join([uid.encode(), ts.encode(), art_mbid.encode(), artist.encode(), trk_mbid.encode(), bad]) \
            + b"\n"
    if kind == "column_count":
        words = title.split(" ", 1)
        out = rnd.choice([
            [uid, ts, art_mbid, artist, trk_mbid, words[0], words[1] if len(words) > 1 else "bonus"],  # tab in title
            [uid, ts, art_mbid, artist, title],  # a column lost
            [uid, ts, art_mbid, artist, trk_mbid, title, ""],  # trailing tab
            [uid, ts, artist, title],
        ])
    elif kind == "empty_user":
        out = [rnd.choice(["", " ", "  "]), ts, art_mbid, artist, trk_mbid, title]
    elif kind == "bad_timestamp":
        out = [uid, rnd.choice(["2009-13-45T99:00:00Z", "yesterday", "", "0000-00-00T00:00:00Z", ts.replace("T", " "),
                                ts[:-1], str(int(datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC).timestamp())),
                                ts[:11] + "25" + ts[13:], "N/A", ts[:-1] + "+02:00"]),
               art_mbid, artist, trk_mbid, title]
    elif kind == "empty_track":
        out = [uid, ts, art_mbid, artist, "", rnd.choice(["", " ", "   "])]
    else:
        raise ValueError(kind)
    return ("\t".join(out) + "\n").encode()


# --- per-user lines -------------------------------------------------------------------------------
@dataclass
class LogStats:
    lines: int = 0
    valid: int = 0
    duplicates: int = 0
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    users: int = 0
    ts_min: int | None = None
    ts_max: int | None = None
    bytes: int = 0


class EventLog:
    """Formats the events TSV of a catalog + users, user by user (ascending user id)."""

    def __init__(self, p: Preset, cat: Catalog, users: Users, seed: int, cache: bool) -> None:
        self.p, self.cat, self.users, self.seed = p, cat, users, seed
        self.plan = plan_plants(p, users, seed)
        # Per track, the constant end of its lines: "artist-mbid\tartist\ttrack-mbid\ttitle\n".
        artists = [a.encode() for a in cat.artist_names]
        self.tails = pa.array(
            [b"%s\t%s\t%s\t%s\n" % (cat.artist_mbid[a], artists[a], m, t.encode())
             for a, m, t in zip(cat.track_artist.tolist(), cat.track_mbid.tolist(), cat.titles, strict=True)],
            pa.binary(),
        )
        self.tail_len = np.diff(np.frombuffer(self.tails.buffers()[1], dtype=np.int32)[: len(self.tails) + 1]).astype(np.int64)
        self.first_day = epoch_day(p.start)
        self.day_table = np.frombuffer(
            "".join((p.start + timedelta(days=i)).isoformat() + "T" for i in range(p.days)).encode(), np.uint8
        ).reshape(p.days, 11)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        self.played = np.zeros(cat.n_tracks, dtype=bool)  # tracks in valid lines (filled by pass 2)

    def events(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and u in self._cache:
            return self._cache[u]
        ev = user_events(self.cat, self.users, self.p, u, self.seed)
        if self._cache is not None:
            self._cache[u] = ev
        return ev

    def _fields(self, u: int, ts: int, t: int) -> list[str]:
        cat = self.cat
        return [self.users.user_id(u), fmt_ts(ts), cat.artist_mbid_of(t), cat.artist(t), cat.mbid(t), cat.titles[t]]

    def _plants(self, u: int, ts: np.ndarray, tr: np.ndarray) -> list[tuple[int, str, bytes]]:
        """(output position, kind, replacement line) for user u, by position; output is ts-descending."""
        n = len(ts)
        out = []
        for pl in self.plan.get(u, []):
            i = pl.local
            line = b"" if pl.kind == DUPLICATE else planted_line(pl.kind, pl.variant, self._fields(u, int(ts[i]), int(tr[i])))
            out.append((n - 1 - i, pl.kind, line))
        return sorted(out)

    def user_size(self, u: int) -> int:
        ts, tr = self.events(u)
        size = PREFIX * len(ts) + int(self.tail_len[tr].sum())
        for pos, kind, line in self._plants(u, ts, tr):
            orig = PREFIX + int(self.tail_len[tr[len(ts) - 1 - pos]])
            size += orig if kind == DUPLICATE else len(line) - orig
        return size

    def _prefix(self, u: int, ts: np.ndarray) -> np.ndarray:
        n = len(ts)
        pre = np.empty((n, PREFIX), dtype=np.uint8)
        pre[:, :12] = np.frombuffer(self.users.user_id(u).encode() + b"\t", np.uint8)
        day = ts // 86400 - self.first_day
        pre[:, 12:23] = self.day_table[day]
        sod = ts % 86400
        zero = ord("0")
        for col, val in ((23, sod // 3600), (26, sod // 60 % 60), (29, sod % 60)):
            pre[:, col] = zero + val // 10
            pre[:, col + 1] = zero + val % 10
        pre[:, 25] = pre[:, 28] = ord(":")
        pre[:, 31] = ord("Z")
        pre[:, 32] = ord("\t")
        return pre

    def user_lines(self, u: int, stats: LogStats) -> list[Any]:
        """User u's lines (ts descending, like the real file) as a list of bytes-like segments."""
        ts, tr = self.events(u)
        if self._cache is not None:
            self._cache.pop(u, None)
        ts_d, tr_d = ts[::-1].copy(), tr[::-1].copy()
        n = len(ts_d)
        pre = self._prefix(u, ts_d)
        offsets = np.arange(0, PREFIX * (n + 1), PREFIX, dtype=np.int32)
        pre_arr = pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(pre)])
        joined = pc.binary_join_element_wise(pre_arr, self.tails.take(pa.array(tr_d)), b"")
        off = np.frombuffer(joined.buffers()[1], dtype=np.int32)[: n + 1]
        values = memoryview(joined.buffers()[2])
        segments: list[Any] = []
        valid = np.ones(n, dtype=bool)
        prev = n_dup = 0
        for pos, kind, line in self._plants(u, ts, tr):
            if kind == DUPLICATE:  # the exact bytes again, right after the original
                segments += [values[off[prev]:off[pos + 1]], values[off[pos]:off[pos + 1]]]
                n_dup += 1
            else:
                segments += [values[off[prev]:off[pos]], line]
                valid[pos] = False
                stats.malformed[kind] += 1
            prev = pos + 1
        segments.append(values[off[prev]:off[n]])
        stats.duplicates += n_dup
        stats.lines += n + n_dup
        n_valid = int(valid.sum())
        stats.valid += n_valid
        if n_valid:
            stats.users += 1
            vts = ts_d[valid]
            stats.ts_min = int(vts.min()) if stats.ts_min is None else min(stats.ts_min, int(vts.min()))
            stats.ts_max = int(vts.max()) if stats.ts_max is None else max(stats.ts_max, int(vts.max()))
            self.played[tr_d[valid]] = True
        return segments


# --- profiles ------------------------------------------------------------------------------------
def profiles_tsv(p: Preset, users: Users, seed: int) -> bytes:
    rng = random.Random(f"profiles:{seed}:{S_PROFILE}")
    rows = [PROFILES_HEADER]
    for u in range(users.n):
        gender = rng.choices(["m", "f", ""], weights=[45, 35, 20])[0]
        age = str(rng.randint(16, 62)) if rng.random() < 0.6 else ""
        country = rng.choice(names.COUNTRIES) if rng.random() < 0.88 else ""
        registered = ""
        if rng.random() < 0.92:
            first = p.start + timedelta(days=int(users.start_day[u]))
            d = max(date(2002, 10, 29), first - timedelta(days=rng.randint(0, 3 * 365)))
            registered = f"{MONTHS[d.month - 1]} {d.day}, {d.year}"
        rows.append(f"{users.user_id(u)}\t{gender}\t{age}\t{country}\t{registered}\n")
    return "".join(rows).encode()


README = """Synthetic listening data in the format of Last.fm Dataset - 1K users.

Generated by musicrec.sample (preset {preset}, seed {seed}); not real user data.
userid-timestamp-artid-artname-traid-traname.tsv: one listen per line, newest first per user.
userid-profile.tsv: #id, gender, age, country, registered.
"""


# --- the tar.gz writer ---------------------------------------------------------------------------
class _HashingFile:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


class GzipPipe:
    """A deterministic gzip writer (no name, fixed mtime) that compresses on a worker thread,
    so formatting (this thread) and deflate (zlib releases the GIL) use both cores."""

    def __init__(self, path: Path, level: int, mtime: int = ARCHIVE_MTIME) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.raw = _HashingFile(self._fh)
        self._gz = gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=self.raw, mtime=mtime)
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="gzip", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (item := self._q.get()) is not None:
                self._gz.write(item)
        except BaseException as exc:  # surfaced by the producer
            self._error = exc
            while self._q.get() is not None:
                pass

    def write(self, data: Any) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.written += len(data)
        if self._pending_bytes >= _QUEUE_BYTES:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if self._error:
            raise self._error
        if self._pending:
            self._q.put(b"".join(self._pending))
            self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        self._flush_pending()
        self._q.put(None)
        self._thread.join()
        if self._error:
            raise self._error
        self._gz.close()
        self._fh.close()


def _tar_header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")


def write_tar_gz(path: Path, members: list[tuple[str, int, Iterable[Any]]], level: int) -> tuple[int, str]:
    """Write a tar.gz whose members' sizes are known up front and whose data is streamed.

    ``members``: (name, size, chunks) in archive order; a name ending in "/" is a directory.
    Returns (bytes, sha256) of the archive file.
    """
    pipe = GzipPipe(path, level)
    try:
        for name, size, chunks in members:
            is_dir = name.endswith("/")
            pipe.write(_tar_header(name, size, directory=is_dir))
            if is_dir:
                continue
            start = pipe.written
            for chunk in chunks:
                pipe.write(chunk)
            got = pipe.written - start
            if got != size:
                raise RuntimeError(f"{name}: wrote {got} bytes, header says {size}")
            pipe.write(b"\0" * (-size % tarfile.BLOCKSIZE))
        pipe.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        pipe.write(b"\0" * (-pipe.written % tarfile.RECORDSIZE))
    finally:
        pipe.close()
    return pipe.raw.size, pipe.raw.sha.hexdigest()


def write_archive(path: Path, p: Preset, cat: Catalog, users: Users, seed: int,
                  progress: Callable[[str], None] | None = None) -> tuple[LogStats, EventLog, int, str]:
    """Write ``lastfm-dataset-1K.tar.gz``; returns (stats, the event log, archive bytes, sha256)."""
    ev = EventLog(p, cat, users, seed, cache=p.events <= CACHE_MAX_EVENTS)
    started = time.monotonic()
    size = 0
    for u in range(users.n):
        size += ev.user_size(u)
    log.info("events: %d users, %d lines, %.1f MB to write (sizing took %.1f s)", users.n, p.events, size / 1e6,
             time.monotonic() - started)
    stats = LogStats(bytes=size)

    def chunks() -> Iterator[Any]:
        t0 = last = time.monotonic()
        for u in range(users.n):
            yield from ev.user_lines(u, stats)
            now = time.monotonic()
            if now - last >= 10:
                last = now
                msg = (f"events: {stats.lines:,}/{p.events:,} lines written "
                       f"({stats.lines / (now - t0):,.0f} lines/s)")
                log.info(msg)
                if progress:
                    progress(msg)

    profiles = profiles_tsv(p, users, seed)
    readme = README.format(preset=p.name, seed=seed).encode()
    members = [
        (f"{ROOT}/", 0, ()),
        (f"{ROOT}/README.txt", len(readme), (readme,)),
        (f"{ROOT}/{PROFILES_MEMBER}", len(profiles), (profiles,)),
        (f"{ROOT}/{EVENTS_MEMBER}", size, chunks()),
    ]
    tmp = path.with_name(path.name + ".tmp")
    nbytes, sha = write_tar_gz(tmp, members, p.compresslevel)
    tmp.replace(path)
    if stats.lines != p.events:
        raise RuntimeError(f"wrote {stats.lines} lines, expected {p.events}")
    return stats, ev, nbytes, sha
