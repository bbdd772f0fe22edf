"""A lookup index built once beside an LRCLIB dump: the dump provider's first pass in one seek per key.

The dump indexes ``name_lower`` alone, so the first pass (:meth:`DumpProvider._candidates`) probes a
title's range and checks every record of that title for the artist: ~54 records for a one-word title
at 1M tracks, one table row each. The dump is read-only (never modified, not even ANALYZEd), so this
module writes a small SQLite file beside it, ``<dump>.musicrec-keys.sqlite3``, holding one row
``(title key, artist key, track id)`` for each key pair under which the first pass finds a record:

* title keys of a record: its ``name_lower``, and each prefix ``p`` where ``name_lower`` continues
  ``"p <credit word> …"`` (the ranges ``key <w> `` .. ``key <w> <TOP>`` of the first pass);
* artist keys: its ``artist_name_lower``, and each prefix ``p`` where it continues ``p [ftw][et]…``
  (the first pass's ``BETWEEN`` + ``GLOB`` on the artist).

So ``(t, a)`` has a row for a record exactly when the first pass's join row ``(t, a)`` selects it:
the candidates, the scorer and the statuses are the same with and without the file (a test checks).

It also holds ``pairs(t, a)``: each (title token, artist token) of one record, read from the dump's
FTS5 index through ``fts5vocab``. The second pass's search (all title words in ``name_lower``, all
artist words in ``artist_name_lower``) can only hit when every such pair of the song is there, so a
song failing that skips the search with the outcome a search finding nothing gives.

Safety: built streaming (dump rows in id order into a scratch table, then one sorted insert: SQLite's
external sort, bounded memory), to a temporary name, renamed into place atomically, under an
exclusive lock file so two tasks starting at once build it once; the other waits and reuses it.
It records the dump it was built from (file size, mtime, SQLite's change counter, format version):
a changed dump is rebuilt, a file that does not record the current dump is never used. Space is
checked first, beside the dump and in SQLite's temporary directory (at 1M tracks: 143 bytes/track
in the file, a peak of ~200 bytes/track of temporary files).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from musicrec.sources import sqlite_ro_uri

log = logging.getLogger(__name__)

VERSION = 1  # bump when the rows change meaning: older files are rebuilt
SUFFIX = ".musicrec-keys.sqlite3"
# space per track, with a margin over the bench at 1M tracks: 143 bytes/track in the file, a peak of
# ~200 bytes/track in SQLite's temporary files (the scratch tables and the sorts' spills)
FILE_BYTES_PER_TRACK, TEMP_BYTES_PER_TRACK = 200, 300
CREDIT_WORDS = ("feat", "ft", "featuring", "with")  # how a credit starts once LRCLIB lowered it
TOP = "\U0010ffff"  # sorts after every character: "<key> " .. "<key> <TOP>" = every "<key> …"
CREDIT_GLOB = "[ftw][et]*"  # an artist's credit after "<artist key> ": feat…, ft…, featuring…, with…
_TITLE_CREDIT = re.compile(" (?=(?:" + "|".join(CREDIT_WORDS) + ") )")
_ARTIST_CREDIT = re.compile(r"[\x01- ](?=[ftw][et])")  # see artist_keys: a char <= ' ', as BETWEEN sorts


class SidecarError(RuntimeError):
    pass


def path_for(dump: Path) -> Path:
    return dump.with_name(dump.name + SUFFIX)


def source_of(dump: Path) -> dict:
    """What identifies the dump's content: size, mtime and SQLite's file change counter (header
    bytes 24..27, incremented by every write transaction, even one that keeps size and mtime)."""
    st = dump.stat()
    with open(dump, "rb") as f:
        header = f.read(100)
    counter = int.from_bytes(header[24:28], "big") if len(header) >= 28 else -1
    return {"dump": dump.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "change_counter": counter,
            "version": VERSION}


def title_keys(name_lower: str) -> list[str]:
    """Title keys under which the first pass finds a record named ``name_lower``: the name, and each
    prefix ``p`` of ``"p <w> …"`` (``w`` a credit word; ``name_lower`` in ``["p w ", "p w <TOP>"]``)."""
    keys = [name_lower]
    if " f" in name_lower or " w" in name_lower:
        for m in _TITLE_CREDIT.finditer(name_lower):
            p = m.start()
            w = name_lower[p + 1:name_lower.index(" ", p + 1)]
            rest = name_lower[p + len(w) + 2:]
            if p and (not rest.startswith(TOP) or rest == TOP):  # <= "p w <TOP>"
                keys.append(name_lower[:p])
    return keys


def artist_keys(artist_lower: str) -> list[str]:
    """Artist keys under which the first pass finds a record by ``artist_lower``: the name, and each
    prefix ``p`` where ``artist_lower`` is in ``[p, p || ' ' || <TOP>]`` and its part after ``p`` and
    one character matches ``[ftw][et]*``. In that range the character after ``p`` is a space or one
    below it (LRCLIB's lowering leaves only spaces; a control character would sort there too)."""
    keys = [artist_lower]
    if " f" in artist_lower or " t" in artist_lower or " w" in artist_lower or not artist_lower.isprintable():
        keys += [artist_lower[:m.start()] for m in _ARTIST_CREDIT.finditer(artist_lower) if m.start()]
    return keys


def rows_of(tracks: Iterable[tuple[int, str | None, str | None]]) -> Iterator[tuple[str, str, int]]:
    """``(title key, artist key, id)`` rows of ``(id, name_lower, artist_name_lower)`` records."""
    for tid, name, artist in tracks:
        if name is None or artist is None:  # NULL never equals nor falls in a range
            continue
        for t in title_keys(name):
            for a in artist_keys(artist):
                yield t, a, tid


def is_current(path: Path, source: dict) -> bool:
    """The file exists, is complete (renamed into place only when built) and records ``source``."""
    if not path.exists():
        return False
    try:
        con = sqlite3.connect(sqlite_ro_uri(path), uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'source'").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return False
    return row is not None and json.loads(row[0]) == source


@contextlib.contextmanager
def locked(lock: Path) -> Iterator[None]:
    """An exclusive lock between processes (``flock`` on ``lock``), for building a file beside the dump."""
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes (and when the process dies)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(dump: Path, *, progress_every: int = 1_000_000) -> Path:
    """The current sidecar of ``dump``: reused when it records the dump as it is now, else built
    (once: concurrent callers wait on the lock, then find it current)."""
    dump = Path(dump)
    target = path_for(dump)
    source = source_of(dump)
    if is_current(target, source):
        return target
    with locked(target.with_name(target.name + ".lock")):
        source = source_of(dump)
        if is_current(target, source):  # another task built it while we waited
            return target
        build(dump, target, source, progress_every=progress_every)
    return target


def build(dump: Path, target: Path, source: dict, *, progress_every: int = 1_000_000) -> dict:
    """Write the sidecar of ``dump`` to a temporary name, then rename it to ``target``."""
    started = time.monotonic()
    src = sqlite3.connect(sqlite_ro_uri(dump), uri=True)
    try:
        tracks = src.execute("SELECT max(rowid) FROM tracks").fetchone()[0] or 0
        _check_space(target, tracks)
        for stale in target.parent.glob(f"{glob.escape(target.name)}.partial-*"):  # a killed builder's (we hold the lock)
            stale.unlink(missing_ok=True)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        log.info("building %s from %s (%d tracks)", target, dump, tracks)
        try:
            rows = _fill(src, partial, dump, source, tracks, progress_every)
            os.replace(partial, target)  # readers see the old file or the whole new one, never a part
        finally:
            partial.unlink(missing_ok=True)
            for extra in ("-journal", "-wal", "-shm"):
                Path(f"{partial}{extra}").unlink(missing_ok=True)
    finally:
        src.close()
    info = {"rows": rows, "tracks": tracks, "bytes": target.stat().st_size,
            "seconds": round(time.monotonic() - started, 2)}
    log.info("built %s: %d rows for %d tracks, %.1f MiB in %.1f s", target.name, rows, tracks,
             info["bytes"] / 2**20, info["seconds"])
    return info


def sqlite_temp_dir() -> Path:
    """Where SQLite puts its temporary files on Unix: ``SQLITE_TMPDIR``, ``TMPDIR``, /var/tmp, /usr/tmp,
    /tmp, then the current directory (the first writable one)."""
    for d in (os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), "/var/tmp", "/usr/tmp", "/tmp", "."):
        if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return Path(d)
    return Path(".")


def _check_space(target: Path, tracks: int) -> None:
    temp = sqlite_temp_dir()
    if temp.stat().st_dev == target.parent.stat().st_dev:
        need = [(target.parent, tracks * (FILE_BYTES_PER_TRACK + TEMP_BYTES_PER_TRACK),
                 "the index and SQLite's temporary files")]
    else:
        need = [(target.parent, tracks * FILE_BYTES_PER_TRACK, "the index"),
                (temp, tracks * TEMP_BYTES_PER_TRACK, "SQLite's temporary files")]
    for where, n, what in need:
        free = shutil.disk_usage(where).free
        if free < n:
            raise SidecarError(f"building the lookup index {target.name} for {tracks:,} tracks needs about "
                               f"{n / 2**30:.1f} GiB free in {where} ({what}), {free / 2**30:.1f} GiB are free: free "
                               "space, or point SQLITE_TMPDIR at a larger disk")


def _fill(src: sqlite3.Connection, partial: Path, dump: Path, source: dict, tracks: int, progress_every: int) -> int:
    out = sqlite3.connect(partial, isolation_level=None)
    try:
        out.execute("PRAGMA journal_mode = OFF")  # a crash leaves a .partial-* file, never the target
        out.execute("PRAGMA synchronous = OFF")
        out.execute("PRAGMA cache_size = -131072")  # 128 MiB: the sorts spill to temp files beyond it
        out.execute("ATTACH DATABASE '' AS scratch")  # a temporary file, deleted on close
        out.execute("ATTACH DATABASE ? AS d", (sqlite_ro_uri(dump),))
        out.execute("BEGIN")
        out.execute("CREATE TABLE scratch.stage (t TEXT, a TEXT, id INTEGER)")
        cur = src.execute("SELECT id, name_lower, artist_name_lower FROM tracks")  # table order: sequential
        seen = rows = 0
        next_log = progress_every
        while batch := cur.fetchmany(50_000):
            staged = list(rows_of(batch))
            out.executemany("INSERT INTO scratch.stage VALUES (?, ?, ?)", staged)
            seen += len(batch)
            rows += len(staged)
            if seen >= next_log:
                log.info("lookup index: %d/%d tracks read", seen, tracks)
                next_log += progress_every
        out.execute("CREATE TABLE keys (t TEXT NOT NULL, a TEXT NOT NULL, id INTEGER NOT NULL, "
                    "PRIMARY KEY (t, a, id)) WITHOUT ROWID")
        out.execute("INSERT OR IGNORE INTO keys SELECT t, a, id FROM scratch.stage ORDER BY t, a, id")
        out.execute("DROP TABLE scratch.stage")
        log.info("lookup index: %d key rows; word pairs of the FTS index next", rows)
        pairs = _fill_pairs(out)
        out.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        out.execute("INSERT INTO meta VALUES ('source', ?), ('rows', ?), ('pairs', ?)",
                    (json.dumps(source), str(rows), str(pairs)))
        out.execute("COMMIT")
    finally:
        out.close()
    return rows


def _fill_pairs(out: sqlite3.Connection) -> int:
    """``pairs(t, a)``: each (title token, artist token) of one record, as the dump's FTS5 index holds
    them (read through ``fts5vocab``: the index's own tokens, not a re-tokenization). A search for
    title words T and artist words A hits a record only when every (t, a) of T x A is here, so
    :meth:`DumpProvider._search` is skipped for songs that fail this. -1: no usable FTS index."""
    row = out.execute("SELECT sql FROM d.sqlite_master WHERE name = 'tracks_fts'").fetchone()
    if row is None or "tokenize" in (row[0] or "").lower():
        # a word is its own token only with the default tokenizer (unicode61); a stemmer would not keep it
        log.warning("no word pairs: tracks_fts is missing or has its own tokenizer; multi-part titles not found by "
                    "key are all searched")
        return -1
    try:
        out.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(d, tracks_fts, instance)")
        out.execute("SELECT * FROM temp.vocab LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:  # no FTS table, or one without positions (detail=none/column)
        log.warning("no word pairs (%s): every multi-part title not found by key is searched", exc)
        return -1
    out.execute("CREATE TABLE scratch.art (doc INTEGER, term TEXT)")
    out.execute("INSERT INTO scratch.art SELECT doc, term FROM temp.vocab WHERE col = 'artist_name_lower'")
    out.execute("CREATE INDEX scratch.art_doc ON art (doc, term)")
    out.execute("CREATE TABLE pairs (t TEXT NOT NULL, a TEXT NOT NULL, PRIMARY KEY (t, a)) WITHOUT ROWID")
    out.execute("INSERT OR IGNORE INTO pairs SELECT n.term, a.term FROM temp.vocab n "
                "JOIN scratch.art a ON a.doc = n.doc WHERE n.col = 'name_lower' ORDER BY 1, 2")
    out.execute("DROP TABLE scratch.art")
    out.execute("DROP TABLE temp.vocab")
    return out.execute("SELECT count(*) FROM pairs").fetchone()[0]
