"""Lyrics from the sample's LRCLIB-format dump: statuses equal the generator's truth, the queue plans
chunks in popularity order, a re-run settles nothing twice, nothing is deleted, .gz dumps unpack once."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from upath import UPath

from musicrec.catalog import sync
from musicrec.lyrics import dump, enrich, queue
from musicrec.lyrics.match import Outcome, Song

pytestmark = pytest.mark.integration

ANCHOR = datetime(2009, 5, 5, tzinfo=UTC)


@pytest.fixture
def catalog(tiny_lake, mongo_db):
    lake, docs = tiny_lake
    mongo_db["lake_partitions"].insert_many([dict(d) for d in docs])
    sync.sync_catalog(UPath(lake), mongo_db, ANCHOR)
    return mongo_db


def expected(tiny_sample) -> dict[str, dict]:
    return json.loads(tiny_sample.truth.read_text())["lyrics"]


def check_against_truth(db, truth) -> Counter:
    statuses: Counter = Counter()
    for doc in db["songs"].find({}, {"lyrics": 1}):
        want = truth.get(doc["_id"], {"outcome": "not_found"})
        got = doc["lyrics"]
        assert got["status"] == want["outcome"], (doc["_id"], want, got["status"])
        if want["outcome"] in ("found", "instrumental"):
            assert got["lrclib_id"] == want["lrclib_id"], (doc["_id"], want, got)
        if got["status"] == "found":
            assert got["plain"] and got["sha256"] and got["provider"] == "dump" and got["attempts"] == 1
        statuses[got["status"]] += 1
    return statuses


def test_dump_chunks_match_the_truth_and_a_rerun_settles_nothing_twice(catalog, tiny_sample):
    db = catalog
    songs_before = db["songs"].count_documents({})
    chunks = queue.plan(db, max_songs=10_000, max_chunks=3, min_chunk=50)
    assert len(chunks) == 3 and sum(c.songs for c in chunks) == songs_before
    # chunks follow popularity order and do not overlap
    bounds = [(c.first, c.last) for c in chunks]
    assert bounds[0][0][0] >= bounds[-1][1][0]
    seen: list[str] = []
    for c in chunks:
        ids = [s.track_id for s, _ in queue.chunk_songs(db, queue.Chunk.from_dict(c.as_dict()))]
        assert len(ids) == c.songs
        seen += ids
    assert len(set(seen)) == songs_before
    top = list(db["songs"].find({}, {"plays_total": 1}).sort(queue.ORDER).limit(1))[0]
    assert seen[0] == top["_id"]

    results = [enrich.run_dump_chunk(db, c, str(tiny_sample.lrclib_dump)) for c in chunks]
    assert sum(r["songs"] for r in results) == songs_before
    statuses = check_against_truth(db, expected(tiny_sample))
    assert statuses["found"] and statuses["not_found"] and statuses["instrumental"]
    assert db["songs"].count_documents({}) == songs_before  # a miss is a status, never a deletion
    snapshot = sorted(db["songs"].find({}, {"lyrics": 1}), key=lambda d: d["_id"])

    # a re-run of the same chunks (a retried task) and a new plan find nothing pending
    assert [enrich.run_dump_chunk(db, c, str(tiny_sample.lrclib_dump))["songs"] for c in chunks] == [0, 0, 0]
    assert queue.plan(db, max_songs=10_000, max_chunks=3) == []
    assert sorted(db["songs"].find({}, {"lyrics": 1}), key=lambda d: d["_id"]) == snapshot
    counts = queue.status_counts(db)
    assert counts["pending"] == 0 and counts["found"] == statuses["found"]


def test_errors_back_off_then_retry_until_max_attempts(catalog):
    db = catalog
    song_id = db["songs"].find_one({})["_id"]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for attempt in range(1, 4):
        op = queue.lyrics_update(song_id, Outcome("error", "api", error="HTTP 503"), attempt - 1, t0)
        db["songs"].bulk_write([op])
        doc = db["songs"].find_one({"_id": song_id})["lyrics"]
        assert doc["status"] == "error" and doc["attempts"] == attempt and doc["last_error"] == "HTTP 503"
        assert doc["next_attempt_at"] == (t0 + queue.RETRY_BASE * 2 ** (attempt - 1)).replace(tzinfo=None)
    pending = queue.pending_filter
    assert db["songs"].count_documents({"_id": song_id, **pending(t0, 5)}) == 0  # backing off
    later = t0 + timedelta(days=2)
    assert db["songs"].count_documents({"_id": song_id, **pending(later, 5)}) == 1  # due again
    assert db["songs"].count_documents({"_id": song_id, **pending(later, 3)}) == 0  # attempts spent: stays error
    # a settled result is never overwritten by a stale writer
    db["songs"].bulk_write([queue.lyrics_update(song_id, Outcome("found", "api", 1, "la"), 3, later)])
    db["songs"].bulk_write([queue.lyrics_update(song_id, Outcome("error", "api", error="late"), 4, later)])
    assert db["songs"].find_one({"_id": song_id})["lyrics"]["status"] == "found"


def test_gz_dump_unpacks_once_and_short_space_is_a_clear_error(tiny_sample, tmp_path, monkeypatch):
    gz = tmp_path / "lrclib-db-dump-test.sqlite3.gz"
    with open(tiny_sample.lrclib_dump, "rb") as src, gzip.open(gz, "wb") as out:
        shutil.copyfileobj(src, out)
    path = dump.ensure_unpacked(gz)
    assert path == tmp_path / "lrclib-db-dump-test.sqlite3" and path.stat().st_size == tiny_sample.lrclib_dump.stat().st_size
    mtime = path.stat().st_mtime_ns
    assert dump.ensure_unpacked(gz) == path and path.stat().st_mtime_ns == mtime  # reused
    with dump.DumpProvider(gz) as provider:
        truth = expected(tiny_sample)
        tid, entry = next((t, e) for t, e in truth.items() if e["outcome"] == "found")
        out = provider.lookup(Song(tid, entry["title"], entry["artist"]))
        assert out.status == "found" and out.lrclib_id == entry["lrclib_id"]

    path.unlink()
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    with pytest.raises(dump.DumpError, match="GiB free"):
        dump.ensure_unpacked(gz)
    with pytest.raises(dump.DumpError, match="does not exist"):
        dump.DumpProvider(tmp_path / "missing.sqlite3")
    (tmp_path / "not-a-dump.sqlite3").write_bytes(b"")
    with pytest.raises(dump.DumpError, match="not an LRCLIB dump"):
        dump.DumpProvider(tmp_path / "not-a-dump.sqlite3")


def handmade_dump(path, records):
    """A dump in LRCLIB's schema holding ``records`` = (name, artist, album, duration, plain, instrumental)."""
    import sqlite3

    from musicrec.lyrics.normalize import lrclib_lower
    from musicrec.sample.lrclib_dump import FTS, SCHEMA

    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    for n, (name, artist, album, duration, plain, instrumental) in enumerate(records, 1):
        con.execute("INSERT INTO tracks (id, name, name_lower, artist_name, artist_name_lower, album_name, "
                    "album_name_lower, duration) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (n, name, lrclib_lower(name), artist, lrclib_lower(artist), album, lrclib_lower(album or ""),
                     duration))
        con.execute("INSERT INTO lyrics (plain_lyrics, track_id, has_plain_lyrics, instrumental) VALUES (?, ?, ?, ?)",
                    (plain, n, plain is not None, instrumental))
    con.executescript(FTS)
    con.commit()
    con.close()
    return path


def test_dump_lookups_on_handmade_records(tmp_path):
    path = handmade_dump(tmp_path / "d.sqlite3", [
        ("Song (feat. Guest) (Live)", "Ann", None, 200.0, "live words", False),  # 1: credit inside
        ("Blue Moon Rising", "Ann", None, 200.0, "decoy words", False),  # 2: a longer title
        ("BLUE MOON [ft. Bo]", "Ann and the Wolves", "Nights", 201.0, "moon words", False),  # 3
        ("Blue Moon", "Ann and the Wolves", "Other", 260.0, "other recording", False),  # 4: 59 s longer
        ("Quiet", "Ann", None, 100.0, None, True),  # 5: instrumental
        ("Rock and Roll", "Zed", None, 180.0, "rock words", False),  # 6
    ])
    with dump.DumpProvider(path) as provider:
        outs = provider.lookup_many([
            Song("a", "Song (Live)", "Ann"),
            Song("b", "Blue Moon", "Ann & the Wolves", duration_s=200.0),
            Song("c", "Quiet", "Ann"),
            Song("d", "Rock & Roll", "Zed"),
            Song("e", "Blue Moon Rising Again", "Ann"),
        ])
    got = [(o.status, o.lrclib_id) for o in outs]
    assert got == [("found", 1), ("found", 3), ("instrumental", 5), ("found", 6), ("not_found", None)]
    assert outs[1].plain == "moon words" and outs[1].sha256
