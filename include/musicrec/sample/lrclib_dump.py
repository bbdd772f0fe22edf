"""An LRCLIB-database-dump-format SQLite file for the sample's tracks.

Schema: LRCLIB's server migration (tracks, lyrics, the last_lyrics_id trigger, the tracks_fts
FTS5 index and its sync triggers, the indexes). ``*_lower`` columns hold LRCLIB's own
normalization (:func:`names.lrclib_lower`). Content is built to exercise a matcher:

* ~70 % of the sample tracks have an entry, ~5 % of those instrumental (no text);
* ~25 % of entries are spelled differently from Last.fm: case, punctuation/accents dropped,
  a ``" (feat. X)"`` title credit, a ``" feat. X"`` artist credit, ``&`` <-> ``and``;
* some entries carry album and/or duration (within ±1 s of the catalog's), some not;
* decoys: same artist + a longer title, the same title by another artist (a "cover"), and
  unrelated tracks — all with lyrics, so a sloppy matcher returns wrong text;
* a few tracks have two lyrics rows (an older and a newer revision; last_lyrics_id -> newer).
"""

from __future__ import annotations

import random
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from musicrec.sample import names
from musicrec.sample.taste import S_LYRICS, Catalog

DUMP = "lrclib-dump.sqlite3"

SCHEMA = """
CREATE TABLE tracks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT,
  name_lower TEXT,
  artist_name TEXT,
  artist_name_lower TEXT,
  album_name TEXT,
  album_name_lower TEXT,
  duration FLOAT,
  last_lyrics_id INTEGER,
  created_at DATETIME,
  updated_at DATETIME,
  FOREIGN KEY (last_lyrics_id) REFERENCES lyrics (id),
  UNIQUE(name_lower, artist_name_lower, album_name_lower, duration)
);
CREATE TABLE lyrics (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  plain_lyrics TEXT,
  synced_lyrics TEXT,
  track_id INTEGER,
  has_plain_lyrics BOOLEAN,
  has_synced_lyrics BOOLEAN,
  instrumental BOOLEAN,
  source TEXT,
  created_at DATETIME,
  updated_at DATETIME,
  FOREIGN KEY (track_id) REFERENCES tracks (id)
);
CREATE TRIGGER set_tracks_last_lyrics_id
AFTER INSERT ON lyrics
BEGIN
  UPDATE tracks SET last_lyrics_id = NEW.id WHERE tracks.id = NEW.track_id;
END;
CREATE INDEX idx_tracks_name_lower ON tracks (name_lower);
CREATE INDEX idx_tracks_artist_name_lower ON tracks (artist_name_lower);
CREATE INDEX idx_tracks_album_name_lower ON tracks (album_name_lower);
CREATE INDEX idx_tracks_duration ON tracks (duration);
CREATE INDEX idx_tracks_last_lyrics_id ON tracks (last_lyrics_id);
CREATE INDEX idx_lyrics_track_id ON lyrics (track_id);
CREATE INDEX idx_lyrics_has_plain_lyrics ON lyrics (has_plain_lyrics);
CREATE INDEX idx_lyrics_has_synced_lyrics ON lyrics (has_synced_lyrics);
CREATE INDEX idx_lyrics_source ON lyrics (source);
"""
# Created after the bulk insert, then filled with FTS5's 'rebuild' (faster than per-row triggers).
FTS = """
CREATE VIRTUAL TABLE tracks_fts USING fts5(
  name_lower,
  album_name_lower,
  artist_name_lower,
  content='tracks',
  content_rowid='id'
);
CREATE TRIGGER tracks_ai AFTER INSERT ON tracks
BEGIN
  INSERT INTO tracks_fts (rowid, name_lower, album_name_lower, artist_name_lower)
  VALUES (new.id, new.name_lower, new.album_name_lower, new.artist_name_lower);
END;
CREATE TRIGGER tracks_au AFTER UPDATE ON tracks
BEGIN
  INSERT INTO tracks_fts(tracks_fts, rowid, name_lower, album_name_lower, artist_name_lower)
  VALUES('delete', old.id, old.name_lower, old.album_name_lower, old.artist_name_lower);
  INSERT INTO tracks_fts (rowid, name_lower, album_name_lower, artist_name_lower)
  VALUES (new.id, new.name_lower, new.album_name_lower, new.artist_name_lower);
END;
CREATE TRIGGER tracks_ad AFTER DELETE ON tracks
BEGIN
  INSERT INTO tracks_fts(tracks_fts, rowid, name_lower, album_name_lower, artist_name_lower)
  VALUES('delete', old.id, old.name_lower, old.album_name_lower, old.artist_name_lower);
END;
INSERT INTO tracks_fts(tracks_fts) VALUES('rebuild');
"""

SHARE_WITH_LYRICS, SHARE_INSTRUMENTAL, SHARE_VARIANT = 0.70, 0.05, 0.25
SHARE_ALBUM, SHARE_DURATION, SHARE_SYNCED, SHARE_TWO_VERSIONS = 0.6, 0.75, 0.6, 0.04
VARIANTS = ("case", "punctuation", "feat_title", "feat_artist", "and")
_STRIP = str.maketrans("", "", "'’\".,!?")
_EPOCH = datetime(2023, 9, 1, tzinfo=UTC)


@dataclass
class Entry:
    name: str
    artist: str
    album: str | None
    duration: float | None
    cluster: int
    lyric_seed: str
    instrumental: bool = False
    versions: int = 1
    sample_track: int | None = None  # catalog index of the sample track this entry answers
    variant: str | None = None
    decoy: str | None = None
    track_id: int = 0
    lyrics_id: int | None = None


@dataclass
class DumpResult:
    counts: dict[str, Any]
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)  # track_id -> expected outcome


def _strip_punct(text: str) -> str:
    out = unicodedata.normalize("NFKD", text.translate(_STRIP))
    out = "".join(ch for ch in out if not unicodedata.combining(ch))
    return " ".join(out.split())


def _variant(rnd: random.Random, title: str, artist: str, credit: str) -> tuple[str, str, str] | None:
    """(kind, name, artist) spelled differently but meaning the same track, or None."""
    options = []
    for cased in (title.upper(), title.lower(), title.swapcase()):
        if cased != title:
            options.append(("case", cased, artist))
            break
    if artist.upper() != artist:
        options.append(("case", title, artist.upper()))
    # Dropped punctuation/accents: only where LRCLIB's own normalization maps both spellings together.
    stripped = _strip_punct(title)
    if stripped and stripped != title and names.lrclib_lower(stripped) == names.lrclib_lower(title):
        options.append(("punctuation", stripped, artist))
    stripped_artist = _strip_punct(artist)
    if stripped_artist and stripped_artist != artist and \
            names.lrclib_lower(stripped_artist) == names.lrclib_lower(artist):
        options.append(("punctuation", title, stripped_artist))
    options.append(("feat_title", f"{title} (feat. {credit})", artist))
    options.append(("feat_artist", title, f"{artist} feat. {credit}"))
    for src, dst in ((" & ", " and "), (" and ", " & "), (" And ", " & ")):
        if src in artist:
            options.append(("and", title, artist.replace(src, dst)))
        if src in title:
            options.append(("and", title.replace(src, dst), artist))
    return rnd.choice(options) if options else None


def _lyrics(entry: Entry, version: int) -> tuple[str, str | None]:
    rnd = random.Random(entry.lyric_seed)
    theme = names.theme_for_cluster(entry.cluster)
    lines = names.lyrics_lines(rnd, theme, rnd.randint(8, 40))
    synced = rnd.random() < SHARE_SYNCED
    if version == 0:  # the older revision: a line missing and a typo, later corrected
        drop = 1 if sum(1 for ln in lines if ln) > 8 else -1
        lines = [ln.replace("e", "3", 1) if i == 0 else ln for i, ln in enumerate(lines) if i != drop]
    plain = "\n".join(lines)
    if not synced:
        return plain, None
    length = entry.duration or 210.0
    t = rnd.uniform(4.0, 18.0)
    step = max(1.5, (length * 0.9 - t) / max(1, len(lines)))
    out = []
    for ln in lines:
        m, s = divmod(t, 60.0)
        out.append(f"[{int(m):02d}:{s:05.2f}] {ln}".rstrip() if ln else f"[{int(m):02d}:{s:05.2f}] ")
        t += step * rnd.uniform(0.6, 1.4)
    return plain, "\n".join(out)


def _stamp(minutes: int) -> str:
    return (_EPOCH + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00:00"


def write_dump(path: Path, cat: Catalog, sample_tracks: np.ndarray, seed: int) -> DumpResult:
    """Write the dump for the given sample tracks (catalog indices); return counts + truth."""
    rnd = random.Random(f"lrclib:{seed}:{S_LYRICS}")
    artist_keys = {names.match_key(a) for a in cat.artist_names}
    title_keys = {(int(cat.track_artist[t]), names.match_key(cat.titles[t])) for t in sample_tracks.tolist()}

    def decoy_artist() -> str:
        while True:
            name = names.artist_name(rnd, names.theme_for_cluster(rnd.randrange(cat.k)))
            if names.match_key(name) not in artist_keys and not names.FEAT.search(name):
                return name

    entries: list[Entry] = []
    for t in sample_tracks.tolist():
        title, artist, c = cat.titles[t], cat.artist(t), int(cat.track_cluster[t])
        a = int(cat.track_artist[t])
        album = cat.album(t) if rnd.random() < SHARE_ALBUM else None
        duration = float(cat.duration[t]) + rnd.choice([0.0, 0.0, 0.0, 0.4, -0.6, 1.0, -1.0]) \
            if rnd.random() < SHARE_DURATION else None
        has = rnd.random() < SHARE_WITH_LYRICS
        if has:
            e = Entry(name=title, artist=artist, album=album, duration=duration, cluster=c,
                      lyric_seed=f"lyrics:{seed}:{t}", sample_track=t)
            e.instrumental = rnd.random() < SHARE_INSTRUMENTAL
            if rnd.random() < SHARE_VARIANT:
                v = _variant(rnd, title, artist, decoy_artist())
                if v:
                    e.variant, e.name, e.artist = v
            if not e.instrumental and rnd.random() < SHARE_TWO_VERSIONS:
                e.versions = 2
            entries.append(e)
        if rnd.random() < (0.15 if has else 0.4):  # same artist, a longer different title
            for _ in range(5):
                extra = names.pseudo_word(rnd).capitalize() if rnd.random() < 0.3 else \
                    rnd.choice(names.GENERIC["adv"] + names.theme_for_cluster(c)["n"]).capitalize()
                d_title = f"{title} {extra}"
                if (a, names.match_key(d_title)) not in title_keys:
                    entries.append(Entry(name=d_title, artist=artist, album=None, duration=duration, cluster=c,
                                         lyric_seed=f"decoy-title:{seed}:{t}", decoy="same_artist"))
                    break
        if rnd.random() < 0.10:  # the same title by another artist (a cover)
            entries.append(Entry(name=title, artist=decoy_artist(), album=None,
                                 duration=float(rnd.randint(120, 400)), cluster=rnd.randrange(cat.k),
                                 lyric_seed=f"decoy-cover:{seed}:{t}", decoy="same_title"))
    for i in range(round(0.2 * len(sample_tracks))):  # unrelated tracks
        c = rnd.randrange(cat.k)
        entries.append(Entry(name=names.track_title(rnd, names.theme_for_cluster(c)), artist=decoy_artist(),
                             album=names.album_name(rnd, names.theme_for_cluster(c)) if rnd.random() < 0.5 else None,
                             duration=float(rnd.randint(90, 480)), cluster=c,
                             lyric_seed=f"decoy-unrelated:{seed}:{i}", decoy="unrelated"))
    # Ids must not leak which rows are the answers: shuffle, then drop UNIQUE collisions.
    rnd.shuffle(entries)
    seen: set[tuple[Any, ...]] = set()
    kept: list[Entry] = []
    for e in entries:
        key = (names.lrclib_lower(e.name), names.lrclib_lower(e.artist),
               None if e.album is None else names.lrclib_lower(e.album), e.duration)
        if key in seen:
            if e.sample_track is not None:
                raise RuntimeError(f"LRCLIB entry collides: {e}")
            continue
        seen.add(key)
        kept.append(e)

    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.executescript(SCHEMA)
        track_rows, lyric_rows = [], []
        for i, e in enumerate(kept, start=1):
            e.track_id = i
            stamp = _stamp(i * 7)
            track_rows.append((i, e.name, names.lrclib_lower(e.name), e.artist, names.lrclib_lower(e.artist), e.album,
                               None if e.album is None else names.lrclib_lower(e.album), e.duration, stamp, stamp))
        for e in kept:
            for version in range(2 - e.versions, 2):
                stamp = _stamp(e.track_id * 7 + (1 if version else 0) + 10_000 * version)
                if e.instrumental:
                    lyric_rows.append((None, None, e.track_id, 0, 0, 1, "lrclib", stamp, stamp))
                else:
                    plain, synced = _lyrics(e, version)
                    lyric_rows.append((plain, synced, e.track_id, 1, int(synced is not None), 0, "lrclib", stamp,
                                       stamp))
        # Older revisions first, so the trigger leaves last_lyrics_id on the newest row.
        lyric_rows.sort(key=lambda r: r[7])
        with con:
            con.executemany("INSERT INTO tracks (id, name, name_lower, artist_name, artist_name_lower, album_name,"
                            " album_name_lower, duration, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                            track_rows)
            con.executemany("INSERT INTO lyrics (plain_lyrics, synced_lyrics, track_id, has_plain_lyrics,"
                            " has_synced_lyrics, instrumental, source, created_at, updated_at)"
                            " VALUES (?,?,?,?,?,?,?,?,?)", lyric_rows)
        con.executescript(FTS)
        con.execute("VACUUM")
        last = dict(con.execute("SELECT id, last_lyrics_id FROM tracks"))
    finally:
        con.close()
    tmp.replace(path)

    result = DumpResult(counts={})
    answers = {e.sample_track: e for e in kept if e.sample_track is not None}
    for t in sample_tracks.tolist():
        e = answers.get(t)
        outcome = "not_found" if e is None else "instrumental" if e.instrumental else "found"
        result.truth[cat.track_id(t)] = {
            "artist": cat.artist(t), "title": cat.titles[t], "outcome": outcome,
            "lrclib_id": None if e is None else e.track_id,
            "lyrics_id": None if e is None else last[e.track_id],
            "variant": None if e is None else e.variant,
            "lrclib_name": None if e is None else e.name, "lrclib_artist": None if e is None else e.artist,
            "album": None if e is None else e.album, "duration": None if e is None else e.duration,
        }
    outcomes = [v["outcome"] for v in result.truth.values()]
    result.counts = {
        "sample_tracks": len(sample_tracks),
        "tracks_with_lyrics": outcomes.count("found") + outcomes.count("instrumental"),
        "found": outcomes.count("found"),
        "instrumental": outcomes.count("instrumental"),
        "not_found": outcomes.count("not_found"),
        "variants": sum(1 for e in answers.values() if e.variant),
        "variant_kinds": {k: sum(1 for e in answers.values() if e.variant == k) for k in VARIANTS},
        "two_versions": sum(1 for e in answers.values() if e.versions == 2),
        "decoys": sum(1 for e in kept if e.decoy),
        "decoy_kinds": {k: sum(1 for e in kept if e.decoy == k) for k in ("same_artist", "same_title", "unrelated")},
        "tracks_rows": len(kept),
        "lyrics_rows": sum(e.versions for e in kept),
    }
    return result
