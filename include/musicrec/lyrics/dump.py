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
A ``.gz`` dump is decompressed once, streaming, to a file beside it.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import sqlite3
import struct
from collections import defaultdict
from pathlib import Path

from musicrec.lyrics.match import THRESHOLD, Candidate, Outcome, Song, outcome_of
from musicrec.lyrics.normalize import lrclib_lower, query_words, strip_credits

log = logging.getLogger(__name__)

PROVIDER = "dump"
SEARCH_LIMIT = 20
CREDIT_WORDS = ("feat", "ft", "featuring", "with")  # how a credit starts once LRCLIB lowered it
_CREDIT_GLOB = "[ftw][et]*"  # after "<artist key> ": feat…, ft…, featuring…, with…
_TOP = "\U0010ffff"  # sorts after every character: "<key> " .. "<key> <TOP>" = every "<key> …"
# Pass 1 sees "<title>" and "<title> <credit>"; a record the scorer accepts but pass 1 cannot see has
# its credit *inside* the title ("Song (feat. X) (Live)"), which needs a title of several parts.
_MULTI_PART = re.compile(r"[(\[{/:–—-]")
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

    def __init__(self, path: str | os.PathLike[str], threshold: float = THRESHOLD, use_fts: bool = True) -> None:
        self.path = ensure_unpacked(path)
        self.threshold = threshold
        self.use_fts = use_fts
        self.con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        self.con.execute("PRAGMA temp_store = MEMORY")
        self.con.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache
        self.con.execute("PRAGMA mmap_size = 1073741824")
        tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        missing = {"tracks", "lyrics", "tracks_fts"} - tables
        if missing:
            raise DumpError(f"{self.path} is not an LRCLIB dump: tables {sorted(missing)} are missing")
        self.con.execute("CREATE TEMP TABLE IF NOT EXISTS q (i INTEGER, lo TEXT, hi TEXT, a TEXT)")

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
        for i, song in enumerate(songs):
            result = outcome_of(song, candidates.get(i, []), PROVIDER, self.threshold)
            if result.status == "not_found" and self.use_fts and _MULTI_PART.search(song.title):
                result = outcome_of(song, self._search(song), PROVIDER, self.threshold)
            out.append(result)
        return out

    def lookup(self, song: Song) -> Outcome:
        return self.lookup_many([song])[0]

    def _candidates(self, songs: list[Song]) -> dict[int, list[Candidate]]:
        """Records named like one of the song's title keys (or that key plus a credit) *and* credited to
        one of its artist keys (or that key plus a credit), in one join on ``name_lower``'s index.

        Each title key probes the index with narrow ranges: the key itself, and ``key <credit> …``
        for each credit word, so a one-word title never scans every longer title it starts."""
        rows = []
        for i, song in enumerate(songs):
            artists = name_keys(song.artist)
            for title in name_keys(song.title):
                ranges = [(title, title)] + [(f"{title} {w} ", f"{title} {w} {_TOP}") for w in CREDIT_WORDS]
                rows.extend((i, lo, hi, artist) for lo, hi in ranges for artist in artists)
        cur = self.con.cursor()
        cur.execute("DELETE FROM q")
        cur.executemany("INSERT INTO q (i, lo, hi, a) VALUES (?, ?, ?, ?)", rows)
        found: dict[int, dict[int, Candidate]] = defaultdict(dict)
        for row in cur.execute(f"""
            SELECT q.i, {_COLUMNS} FROM q
            JOIN tracks t ON t.name_lower BETWEEN q.lo AND q.hi
            LEFT JOIN lyrics l ON l.id = t.last_lyrics_id
            WHERE t.artist_name_lower = q.a OR (t.artist_name_lower BETWEEN q.a AND q.a || ' {_TOP}'
                  AND substr(t.artist_name_lower, length(q.a) + 2) GLOB '{_CREDIT_GLOB}')
        """):
            found[row[0]].setdefault(row[1], _candidate(row[1:]))
        return {i: list(c.values()) for i, c in found.items()}

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


def name_keys(name: str) -> list[str]:
    """``*_lower`` values a record of this title or artist can have before any credit: LRCLIB's
    lowering of the name without its credit, with ``&``/``+`` dropped (LRCLIB's way), spelled
    ``and``, or ``and`` dropped (a record spelling ``&`` where we spell ``and``)."""
    bare = strip_credits(name)
    lowered = lrclib_lower(bare)
    keys = [lowered, lrclib_lower(bare.replace("&", " and ").replace("+", " and ")),
            " ".join(w for w in lowered.split() if w != "and")]
    return [k for n, k in enumerate(keys) if k and k not in keys[:n]]


def _candidate(row: tuple) -> Candidate:
    return Candidate(int(row[0]), row[1] or "", row[2] or "", row[3], float(row[4]) if row[4] is not None else None,
                     bool(row[5]), row[6] or None, row[7] or None)
