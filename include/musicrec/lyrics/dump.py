"""The dump provider: match songs against an LRCLIB database dump (SQLite, LRCLIB's public schema).

Two passes per batch, both through the dump's indexes (the dump is never loaded into memory):

1. exact: a temp table of the batch's ``lrclib_lower(title)``/``lrclib_lower(artist)`` joined to
   ``tracks`` on ``name_lower``/``artist_name_lower`` (index ``idx_tracks_name_lower``);
2. search, for songs the first pass did not settle: the FTS5 table ``tracks_fts`` with the title's
   words in ``name_lower`` and the artist's in ``artist_name_lower`` (≤ 20 candidates, like the API's
   ``/api/search``), so ``Title (feat. X)``, ``A and B`` for ``A & B`` and re-cased names are found.

Both passes score candidates with :mod:`musicrec.lyrics.match`, so statuses equal the API provider's.
A ``.gz`` dump is decompressed once, streaming, to a file beside it.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import sqlite3
import struct
from collections import defaultdict
from pathlib import Path

from musicrec.lyrics.match import THRESHOLD, Candidate, Outcome, Song, outcome_of
from musicrec.lyrics.normalize import lrclib_lower, query_words

log = logging.getLogger(__name__)

PROVIDER = "dump"
SEARCH_LIMIT = 20
_COLUMNS = ("t.id, t.name, t.artist_name, t.album_name, t.duration, coalesce(l.instrumental, 0), "
            "l.plain_lyrics, l.synced_lyrics")


class DumpError(RuntimeError):
    pass


def ensure_unpacked(path: str | os.PathLike[str]) -> Path:
    """The SQLite file of ``path``: itself, or for ``x.sqlite3.gz`` the file ``x.sqlite3`` beside it,
    decompressed once (a marker records which archive it came from, so a changed archive re-unpacks)."""
    src = Path(path)
    if not src.exists():
        raise DumpError(f"LRCLIB dump {src} does not exist")
    if src.suffix != ".gz":
        return src
    target = src.with_suffix("")
    marker = target.with_name(target.name + ".source.json")
    stat = src.stat()
    source = {"archive": src.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if target.exists() and marker.exists() and json.loads(marker.read_text()) == source:
        return target
    need = _unpacked_size_estimate(src)
    free = shutil.disk_usage(target.parent).free
    if free < need * 1.05:
        raise DumpError(f"unpacking {src} needs about {need / 2**30:.1f} GiB free in {target.parent}, "
                        f"{free / 2**30:.1f} GiB are free (the full LRCLIB dump unpacks to 60+ GiB): free space, "
                        "or unpack it elsewhere and pass that .sqlite3 file as dump_path")
    partial = target.with_name(target.name + ".partial")
    log.info("unpacking %s (%.1f MiB) -> %s", src, stat.st_size / 2**20, target)
    with gzip.open(src, "rb") as fin, open(partial, "wb") as fout:
        shutil.copyfileobj(fin, fout, 16 << 20)
    os.replace(partial, target)
    marker.write_text(json.dumps(source))
    return target


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
    """Thread-confined: one provider (one SQLite connection) per thread/process."""

    name = PROVIDER

    def __init__(self, path: str | os.PathLike[str], threshold: float = THRESHOLD) -> None:
        self.path = ensure_unpacked(path)
        self.threshold = threshold
        self.con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        self.con.execute("PRAGMA temp_store = MEMORY")
        self.con.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache
        self.con.execute("PRAGMA mmap_size = 1073741824")
        tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        missing = {"tracks", "lyrics", "tracks_fts"} - tables
        if missing:
            raise DumpError(f"{self.path} is not an LRCLIB dump: tables {sorted(missing)} are missing")
        self.con.execute("CREATE TEMP TABLE IF NOT EXISTS q (i INTEGER PRIMARY KEY, name TEXT, artist TEXT)")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DumpProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup_many(self, songs: list[Song]) -> list[Outcome]:
        """One outcome per song, in order."""
        exact = self._exact(songs)
        out: list[Outcome] = []
        for i, song in enumerate(songs):
            result = outcome_of(song, exact.get(i, []), PROVIDER, self.threshold) if i in exact else None
            if result is None or result.status == "not_found":
                result = outcome_of(song, self._search(song), PROVIDER, self.threshold)
            out.append(result)
        return out

    def lookup(self, song: Song) -> Outcome:
        return self.lookup_many([song])[0]

    def _exact(self, songs: list[Song]) -> dict[int, list[Candidate]]:
        cur = self.con.cursor()
        cur.execute("DELETE FROM q")
        cur.executemany("INSERT INTO q VALUES (?, ?, ?)",
                        ((i, lrclib_lower(s.title), lrclib_lower(s.artist)) for i, s in enumerate(songs)))
        rows = cur.execute(f"""
            SELECT q.i, {_COLUMNS} FROM q
            JOIN tracks t ON t.name_lower = q.name AND t.artist_name_lower = q.artist
            LEFT JOIN lyrics l ON l.id = t.last_lyrics_id
        """).fetchall()
        found: dict[int, list[Candidate]] = defaultdict(list)
        for row in rows:
            found[row[0]].append(_candidate(row[1:]))
        return found

    def _search(self, song: Song) -> list[Candidate]:
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


def _candidate(row: tuple) -> Candidate:
    return Candidate(int(row[0]), row[1] or "", row[2] or "", row[3], float(row[4]) if row[4] is not None else None,
                     bool(row[5]), row[6] or None, row[7] or None)
