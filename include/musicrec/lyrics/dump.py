"""The dump provider: match songs against an LRCLIB database dump (SQLite, LRCLIB's public schema).

Two passes per batch, both through the dump's indexes (the dump is never loaded into memory):

1. names: a temp table of each song's (title key, artist key) pairs joined to ``tracks`` by a range on
   ``name_lower`` (index ``idx_tracks_name_lower``) and filtered on ``artist_name_lower``: records
   named like the title (LRCLIB's lowering; ``&`` dropped, spelled ``and``, or ``and`` dropped) or
   like it plus a credit (``title feat x``), by the artist or the artist plus a credit. Like the
   API's search, names must match word for word (no typos); the scorer then decides;
2. search, for songs of several parts (brackets, dashes) that the first pass left ``not_found``
   (``use_fts``), whose record may carry a credit inside the title: the FTS5 table ``tracks_fts``
   with the title's words in ``name_lower`` and the artist's in ``artist_name_lower`` (≤ 20 by rank,
   like the API's ``/api/search``), which finds the same words in another order.

Both passes score candidates with :mod:`musicrec.lyrics.match`, so statuses equal the API provider's.
A ``.gz`` dump is decompressed once, streaming, to a file beside it; the bytes written are counted
as they are written (``max_unpacked_bytes``; gzip's own size field is not trusted). The dump is
always opened read-only through a percent-quoted SQLite URI, whatever its name contains.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import re
import shutil
import sqlite3
import struct
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from musicrec.lyrics import sidecar
from musicrec.lyrics.match import THRESHOLD, Candidate, Outcome, Song, outcome_of
from musicrec.lyrics.normalize import lrclib_lower, plain_key, query_words, strip_credits
from musicrec.lyrics.sidecar import CREDIT_GLOB, CREDIT_WORDS, TOP
from musicrec.sources import Allowed, SourceNotAllowed, check_path, sqlite_ro_uri

log = logging.getLogger(__name__)

PROVIDER = "dump"
DEFAULT_MAX_UNPACKED_BYTES = 128 * 2**30  # the full LRCLIB dump unpacks to 60+ GiB
SEARCH_LIMIT = 20
# Pass 1 sees "<title>" and "<title> <credit>"; a record the scorer accepts but pass 1 cannot see has
# its credit *inside* the title ("Song (feat. X) (Live)"), which needs a title of several parts.
_MULTI_PART = re.compile(r"[(\[{/:–—-]")
_PLAIN_WORD = re.compile(r"[a-z0-9]+")  # a word FTS5's unicode61 tokenizer keeps as one token, unchanged
_COLUMNS = ("t.id, t.name, t.artist_name, t.album_name, t.duration, coalesce(l.instrumental, 0), "
            "l.plain_lyrics, l.synced_lyrics")


class DumpError(RuntimeError):
    pass


def checked(path: str | os.PathLike[str], allowed: str | Allowed | None) -> Path:
    """``path`` as the dump to read: with an allow-list (Variable ``musicrec_allowed_sources``), its
    real path, which must lie under an allowed ``file://`` prefix; without one, the path as given."""
    return check_path(path, allowed, what="dump_path") if allowed is not None else Path(path)


def ensure_unpacked(path: str | os.PathLike[str], *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> Path:
    """The SQLite file of ``path``: itself, or for ``x.sqlite3.gz`` the file ``x.sqlite3`` beside it,
    decompressed once (a marker records which archive it came from, so a changed archive re-unpacks).
    An archive that unpacks to more than ``max_unpacked_bytes`` is refused, and nothing is left."""
    src = Path(path)
    if not src.exists():
        raise DumpError(f"LRCLIB dump {src} does not exist")
    if src.suffix != ".gz":
        return src
    target = src.with_suffix("")
    marker = target.with_name(target.name + ".source.json")
    if _unpacked_is_current(src, target, marker):
        return target
    # two tasks starting at once: one unpacks, the other waits and then finds it current
    with sidecar.locked(target.with_name(target.name + ".lock")):
        if _unpacked_is_current(src, target, marker):
            return target
        stat = src.stat()
        need = _unpacked_size_estimate(src)
        free = shutil.disk_usage(target.parent).free
        if free < need * 1.05:
            raise DumpError(f"unpacking {src} needs about {need / 2**30:.1f} GiB free in {target.parent}, "
                            f"{free / 2**30:.1f} GiB are free (the full LRCLIB dump unpacks to 60+ GiB): free space, "
                            "or unpack it elsewhere and pass that .sqlite3 file as dump_path")
        for stale in target.parent.glob(f"{glob.escape(target.name)}.partial-*"):  # a killed unpacker's (we hold the lock)
            stale.unlink(missing_ok=True)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        log.info("unpacking %s (%.1f MiB) -> %s", src, stat.st_size / 2**20, target)
        try:
            _unpack_bounded(src, partial, max_unpacked_bytes)
            marker.unlink(missing_ok=True)  # no marker while the target changes
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        marker.write_text(json.dumps(_archive_source(src)))
    return target


def _unpack_bounded(src: Path, partial: Path, max_bytes: int) -> int:
    """Decompress ``src`` into ``partial``, counting the bytes *before* each write: a gzip bomb (or a
    header lying about the size) stops at ``max_bytes``, with at most that much on disk."""
    written = 0
    with gzip.open(src, "rb") as fin, open(partial, "wb") as fout:
        while chunk := fin.read(16 << 20):
            written += len(chunk)
            if written > max_bytes:
                raise SourceNotAllowed("max_unpacked_bytes", os.fspath(src),
                                       f"unpacks to more than max_unpacked_bytes={max_bytes} bytes")
            fout.write(chunk)
    return written


def _archive_source(src: Path) -> dict:
    stat = src.stat()
    return {"archive": src.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _unpacked_is_current(src: Path, target: Path, marker: Path) -> bool:
    try:
        return target.exists() and json.loads(marker.read_text()) == _archive_source(src)
    except (OSError, ValueError):
        return False


def prepare(path: str | os.PathLike[str], *, allowed: str | Allowed | None = None,
            max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> dict:
    """What the dump's chunks need, made once before they start (the DAG's plan task): the unpacked
    file and its lookup index (None, with a warning, where it cannot be built). ``allowed``: see
    :func:`checked`."""
    dump = ensure_unpacked(checked(path, allowed), max_unpacked_bytes=max_unpacked_bytes)
    return {"dump": str(dump), "sidecar": str(index) if (index := _ensure_sidecar(dump)) else None}


def _ensure_sidecar(dump: Path) -> Path | None:
    try:
        return sidecar.ensure(dump)
    except (sidecar.SidecarError, OSError, sqlite3.Error) as exc:
        log.warning("no lookup index beside %s (%s): probing the dump's name index instead (slower, same "
                    "results)", dump, exc)
        return None


def _unpacked_size_estimate(src: Path) -> int:
    """gzip's trailer holds the size modulo 2**32: good for small files, a floor for big ones."""
    size = src.stat().st_size
    with open(src, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", f.read(4))[0]
    return max(isize, int(size * 2.0))


def _fts_phrase(words: list[str]) -> str:
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class DumpProvider:
    """Thread-confined: one provider (one SQLite connection) per thread/process.

    ``use_sidecar``: look the first pass up in the lookup index beside the dump
    (:mod:`musicrec.lyrics.sidecar`, built here when missing or stale); where it cannot be built (no
    space, a read-only folder) the provider says so and probes the dump's own index instead: the same
    candidates and statuses, slower."""

    name = PROVIDER

    def __init__(self, path: str | os.PathLike[str], threshold: float = THRESHOLD, use_fts: bool = True,
                 use_sidecar: bool = True, *, allowed: str | Allowed | None = None,
                 max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
        self.path = ensure_unpacked(checked(path, allowed), max_unpacked_bytes=max_unpacked_bytes)
        self.threshold = threshold
        self.use_fts = use_fts
        self.con = sqlite3.connect(sqlite_ro_uri(self.path), uri=True)
        self.con.execute("PRAGMA temp_store = MEMORY")
        self.con.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache
        self.con.execute("PRAGMA mmap_size = 1073741824")
        tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        missing = {"tracks", "lyrics", "tracks_fts"} - tables
        if missing:
            raise DumpError(f"{self.path} is not an LRCLIB dump: tables {sorted(missing)} are missing")
        self.con.execute("CREATE TEMP TABLE IF NOT EXISTS q (i INTEGER, lo TEXT, hi TEXT, a TEXT)")
        self.pairs = False  # the sidecar's word pairs: a search that cannot hit is skipped
        self.sidecar = self._attach_sidecar() if use_sidecar else None

    def _attach_sidecar(self) -> Path | None:
        path = _ensure_sidecar(self.path)
        if path is None:
            return None
        self.con.execute("ATTACH DATABASE ? AS s", (sqlite_ro_uri(path),))
        self.con.execute("PRAGMA s.cache_size = -32768")  # 32 MiB; page cache and mmap are per schema
        self.con.execute("PRAGMA s.mmap_size = 1073741824")
        # the file attached may have been replaced since ensure() checked it: check what is attached
        try:
            row = self.con.execute("SELECT value FROM s.meta WHERE key = 'source'").fetchone()
        except sqlite3.DatabaseError:
            row = None
        if row is None or json.loads(row[0]) != sidecar.source_of(self.path):
            self.con.execute("DETACH DATABASE s")
            log.warning("lookup index %s does not record %s as it is now: not used", path, self.path)
            return None
        self.con.execute("CREATE TEMP TABLE IF NOT EXISTS k (i INTEGER, t TEXT, a TEXT)")
        pairs = self.con.execute("SELECT value FROM s.meta WHERE key = 'pairs'").fetchone()
        self.pairs = pairs is not None and int(pairs[0]) >= 0
        return path

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DumpProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup_many(self, songs: list[Song]) -> list[Outcome]:
        """One outcome per song, in order."""
        candidates = self._candidates(songs)
        out = []
        search = []
        for i, song in enumerate(songs):
            result = outcome_of(song, candidates.get(i, []), PROVIDER, self.threshold)
            if result.status == "not_found" and self.use_fts and _MULTI_PART.search(song.title):
                search.append(i)
            out.append(result)
        if search and self.pairs:
            hits = self._may_hit([songs[i] for i in search])
            for i in (i for i, hit in zip(search, hits, strict=True) if not hit):
                out[i] = outcome_of(songs[i], [], PROVIDER, self.threshold)  # what a search finding nothing gives
            search = [i for i, hit in zip(search, hits, strict=True) if hit]
        for i in search:
            out[i] = outcome_of(songs[i], self._search(songs[i]), PROVIDER, self.threshold)
        return out

    def lookup(self, song: Song) -> Outcome:
        return self.lookup_many([song])[0]

    def _candidates(self, songs: list[Song]) -> dict[int, list[Candidate]]:
        return self._candidates_by_key(songs) if self.sidecar else self._candidates_by_range(songs)

    def _candidates_by_key(self, songs: list[Song]) -> dict[int, list[Candidate]]:
        """The first pass through the sidecar: one seek per (title key, artist key) pair, which finds
        exactly the records :meth:`_candidates_by_range` finds for that pair."""
        rows = [(i, t, a) for i, song in enumerate(songs)
                for t in name_keys(song.title) for a in name_keys(song.artist)]
        return _by_song(self._temp("k", rows).execute(f"""
            SELECT k.i, {_COLUMNS} FROM k
            CROSS JOIN s.keys x ON x.t = k.t AND x.a = k.a
            CROSS JOIN tracks t ON t.id = x.id
            LEFT JOIN lyrics l ON l.id = t.last_lyrics_id
        """))

    def _temp(self, table: str, rows: list[tuple]) -> sqlite3.Cursor:
        """A cursor after temp table ``table`` was refilled with ``rows`` (the batch's probes)."""
        cur = self.con.cursor()
        cur.execute(f"DELETE FROM {table}")
        if rows:
            cur.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        return cur

    def _candidates_by_range(self, songs: list[Song]) -> dict[int, list[Candidate]]:
        """Records named like one of the song's title keys (or that key plus a credit) *and* credited to
        one of its artist keys (or that key plus a credit), in one join on ``name_lower``'s index.

        Each title key probes the index with narrow ranges: the key itself, and ``key <credit> …``
        for each credit word, so a one-word title never scans every longer title it starts."""
        rows = []
        for i, song in enumerate(songs):
            artists = name_keys(song.artist)
            for title in name_keys(song.title):
                ranges = [(title, title)] + [(f"{title} {w} ", f"{title} {w} {TOP}") for w in CREDIT_WORDS]
                rows.extend((i, lo, hi, artist) for lo, hi in ranges for artist in artists)
        return _by_song(self._temp("q", rows).execute(f"""
            SELECT q.i, {_COLUMNS} FROM q
            JOIN tracks t ON t.name_lower BETWEEN q.lo AND q.hi
            LEFT JOIN lyrics l ON l.id = t.last_lyrics_id
            WHERE t.artist_name_lower = q.a OR (t.artist_name_lower BETWEEN q.a AND q.a || ' {TOP}'
                  AND substr(t.artist_name_lower, length(q.a) + 2) GLOB '{CREDIT_GLOB}')
        """))

    def _may_hit(self, songs: list[Song]) -> list[bool]:
        """False where :meth:`_search` is certain to find no record: some (title word, artist word) of
        the song occurs in no record of the FTS index (the sidecar's ``pairs``). Only words the tokenizer
        keeps as they are (``[a-z0-9]+``) are checked; a song with another word is searched."""
        rows, wanted, hits = [], [], [True] * len(songs)
        for n, song in enumerate(songs):
            title, artist = query_words(song.title), query_words(song.artist)
            if title and artist and all(map(_PLAIN_WORD.fullmatch, title + artist)):
                pairs = {(t, a) for t in title for a in artist}
                rows.extend((n, t, a) for t, a in pairs)
                wanted.append((n, len(pairs)))
        if not rows:
            return hits
        present = dict(self._temp("k", rows).execute("SELECT k.i, count(*) FROM k CROSS JOIN s.pairs p ON p.t = k.t AND p.a = k.a "
                                   "GROUP BY k.i"))
        for n, need in wanted:
            hits[n] = present.get(n, 0) == need
        return hits

    def _search(self, song: Song) -> list[Candidate]:
        """FTS5 search (``tracks_fts``), as the API's ``/api/search`` does: words in any order."""
        title, artist = query_words(song.title), query_words(song.artist)
        if not title:
            return []
        expr = f"name_lower : ({_fts_phrase(title)})"
        if artist:
            expr += f" AND artist_name_lower : ({_fts_phrase(artist)})"
        rows = self.con.execute(f"""
            SELECT {_COLUMNS} FROM tracks_fts f
            JOIN tracks t ON t.id = f.rowid
            LEFT JOIN lyrics l ON l.id = t.last_lyrics_id
            WHERE tracks_fts MATCH ? ORDER BY f.rank LIMIT {SEARCH_LIMIT}
        """, (expr,)).fetchall()
        return [_candidate(r) for r in rows]


@lru_cache(maxsize=1 << 17)  # an artist's every song
def name_keys(name: str) -> tuple[str, ...]:
    """``*_lower`` values a record of this title or artist can have before any credit: LRCLIB's
    lowering of the name without its credit, with ``&``/``+`` dropped (LRCLIB's way), spelled
    ``and``, or ``and`` dropped (a record spelling ``&`` where we spell ``and``)."""
    if (lowered := plain_key(name)) is not None:  # fast path: no credit, no '&'/'+': the same keys
        dropped = " ".join(w for w in lowered.split() if w != "and")
        return tuple(k for k in (lowered, dropped if dropped != lowered else "") if k)
    bare = strip_credits(name)
    lowered = lrclib_lower(bare)
    keys = [lowered, lrclib_lower(bare.replace("&", " and ").replace("+", " and ")),
            " ".join(w for w in lowered.split() if w != "and")]
    return tuple(k for n, k in enumerate(keys) if k and k not in keys[:n])


def _by_song(rows: Iterable[tuple]) -> dict[int, list[Candidate]]:
    """Candidates per song index from ``(song index, candidate columns…)`` rows, each record once."""
    found: dict[int, dict[int, Candidate]] = defaultdict(dict)
    for row in rows:
        found[row[0]].setdefault(row[1], _candidate(row[1:]))
    return {i: list(c.values()) for i, c in found.items()}


def _candidate(row: tuple) -> Candidate:
    return Candidate(int(row[0]), row[1] or "", row[2] or "", row[3], float(row[4]) if row[4] is not None else None,
                     bool(row[5]), row[6] or None, row[7] or None)
