"""The dump provider's lookup index (``musicrec.lyrics.sidecar``): the same candidates and statuses as
the dump's own index, built once, rebuilt when the dump changes, one builder at a time, and a
half-written or foreign file is never used."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import time

import pytest

from musicrec.lyrics import dump, sidecar
from musicrec.lyrics.match import Song
from tests.integration.test_lyrics_dump import expected, handmade_dump

pytestmark = pytest.mark.integration

# words that exercise every key rule: credit words, [ftw][et]… artist continuations, '&'/'and'
WORDS = ["Love", "The", "Tell", "West", "Fever", "Wet", "Rock", "Roll", "Night", "Blue", "Moon", "Ann", "Bo",
         "with", "feat.", "ft.", "featuring", "and", "&"]


def _name(rnd: random.Random, max_words: int) -> str:
    name = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, max_words)))
    r = rnd.random()
    if r < 0.15:
        name += f" (feat. {rnd.choice(WORDS[:13])})"
    elif r < 0.25:
        name += f" [with {rnd.choice(WORDS[:13])}]"
    elif r < 0.35:
        name += f" ft. {rnd.choice(WORDS[:13])}"
    return name


def tricky(tmp_path, n: int = 500, seed: int = 3):
    """A dump of ``n`` records with names full of credits and near-credits, and songs made of them
    (spelled the same, with the credit dropped or another added, '&' swapped, upper case) plus others."""
    rnd = random.Random(seed)
    records, seen = [], set()
    while len(records) < n:
        name, artist = _name(rnd, 4), _name(rnd, 3)
        key = (name.lower(), artist.lower())
        if key in seen:
            continue
        seen.add(key)
        records.append((name, artist, None, float(rnd.randint(100, 300)), None if rnd.random() < 0.1 else f"words {n}",
                        rnd.random() < 0.05))
    path = handmade_dump(tmp_path / "tricky.sqlite3", records)
    songs = []
    for k in range(3 * n):
        name, artist = records[rnd.randrange(n)][:2]
        r = rnd.random()
        if r < 0.2:
            name = name.split(" (")[0].split(" [")[0].split(" ft. ")[0]
        elif r < 0.35:
            name = f"{name} (feat. {rnd.choice(WORDS[:13])})"
        elif r < 0.45:
            artist = f"{artist} {rnd.choice(['feat. X', 'with Y', 'The Band', 'West', 'Tell'])}"
        elif r < 0.55:
            name, artist = name.replace("&", "and"), artist.replace(" and ", " & ")
        elif r < 0.65:
            name, artist = name.upper(), artist.upper()
        elif r < 0.8:
            name, artist = _name(rnd, 4), _name(rnd, 3)
        songs.append(Song(f"s{k}", name, artist, duration_s=rnd.choice([None, 150.0, 200.0])))
    return path, songs


def test_key_rules():
    assert sidecar.title_keys("song feat x with y") == ["song feat x with y", "song", "song feat x"]
    assert sidecar.title_keys("feat x") == ["feat x"]  # no empty key
    assert sidecar.title_keys("song featx") == ["song featx"]
    assert sidecar.artist_keys("ann the wolves") == ["ann the wolves"]  # "th": not [ftw][et]
    assert sidecar.artist_keys("ann tell wolves") == ["ann tell wolves", "ann"]
    assert sidecar.artist_keys("ann bo west") == ["ann bo west", "ann bo"]
    assert sidecar.artist_keys("ann") == ["ann"]
    assert list(sidecar.rows_of([(1, "a with b", "c ft d"), (2, None, "x")])) == [
        ("a with b", "c ft d", 1), ("a with b", "c", 1), ("a", "c ft d", 1), ("a", "c", 1)]


def test_the_sidecar_finds_what_the_range_join_finds(tmp_path):
    path, songs = tricky(tmp_path)
    with dump.DumpProvider(path, use_sidecar=False) as plain, dump.DumpProvider(path) as keyed:
        assert plain.sidecar is None and keyed.sidecar == sidecar.path_for(path) and keyed.pairs
        by_range, by_key = plain._candidates(songs), keyed._candidates(songs)
    ids = {i: sorted(c.lrclib_id for c in cands) for i, cands in by_range.items()}
    assert ids == {i: sorted(c.lrclib_id for c in cands) for i, cands in by_key.items()}
    # the credit ranges were exercised: records found under a key shorter than their name
    con = sqlite3.connect(path)
    lowered = dict(con.execute("SELECT id, name_lower FROM tracks"))
    artists = dict(con.execute("SELECT id, artist_name_lower FROM tracks"))
    con.close()
    found = {cid for cands in ids.values() for cid in cands}
    assert len(ids) > len(songs) // 2
    assert sum(" feat " in lowered[c] or " with " in lowered[c] or " ft " in lowered[c] for c in found) > 20
    assert sum(any(w in artists[c].split()[1:] for w in ("tell", "west", "wet", "fever")) for c in found) > 20


def test_statuses_equal_with_and_without_the_sidecar(tmp_path, tiny_sample, monkeypatch):
    path, songs = tricky(tmp_path, seed=5)
    tiny = tmp_path / "tiny.sqlite3"
    shutil.copy(tiny_sample.lrclib_dump, tiny)
    truth = [Song(t, e["title"], e["artist"], e.get("album"), e.get("duration_s"))
             for t, e in expected(tiny_sample).items() if e.get("title")]
    searched: list[str] = []
    real_search = dump.DumpProvider._search
    monkeypatch.setattr(dump.DumpProvider, "_search", lambda self, s: searched.append(s.track_id) or real_search(self, s))
    for dump_path, batch in ((path, songs), (tiny, truth)):
        assert batch
        with dump.DumpProvider(dump_path, use_sidecar=False) as plain:
            want = plain.lookup_many(batch)
        n_plain, searched[:] = len(searched), []
        with dump.DumpProvider(dump_path) as keyed:
            assert keyed.sidecar and keyed.pairs
            got = keyed.lookup_many(batch)
        assert got == want  # status, record, lyrics, score and reason, song for song
        assert len(searched) <= n_plain
        statuses = {o.status for o in got}
        assert {"found", "not_found"} <= statuses
        searched[:] = []
    # the word pairs skip searches that cannot hit (the tricky songs: names not in the dump)
    with dump.DumpProvider(path) as keyed:
        keyed.lookup_many(songs)
    n_keyed, searched[:] = len(searched), []
    with dump.DumpProvider(path, use_sidecar=False) as plain:
        plain.lookup_many(songs)
    assert 0 < n_keyed < len(searched)


def _source(path):
    con = sqlite3.connect(f"file:{sidecar.path_for(path)}?mode=ro", uri=True)
    try:
        return json.loads(con.execute("SELECT value FROM meta WHERE key = 'source'").fetchone()[0])
    finally:
        con.close()


def test_reused_while_the_dump_is_unchanged_rebuilt_when_it_changes(tiny_sample, tmp_path, monkeypatch):
    path = tmp_path / "dump.sqlite3"
    shutil.copy(tiny_sample.lrclib_dump, path)
    built = sidecar.ensure(path)
    assert built == sidecar.path_for(path) and _source(path) == sidecar.source_of(path)
    first = built.stat()
    real_build = sidecar.build
    monkeypatch.setattr(sidecar, "build", lambda *a, **k: pytest.fail("rebuilt an unchanged dump"))
    assert sidecar.ensure(path) == built
    with dump.DumpProvider(path) as provider:
        assert provider.sidecar == built
    assert built.stat().st_ino == first.st_ino and built.stat().st_mtime_ns == first.st_mtime_ns

    # a new record: the size, mtime and change counter move; the index is rebuilt and finds it
    monkeypatch.setattr(sidecar, "build", real_build)
    con = sqlite3.connect(path)
    con.execute("INSERT INTO tracks (name, name_lower, artist_name, artist_name_lower, duration) "
                "VALUES ('Brand New Tune', 'brand new tune', 'Nobody Yet', 'nobody yet', 200.0)")
    tid = con.execute("SELECT max(id) FROM tracks").fetchone()[0]
    con.execute("INSERT INTO lyrics (plain_lyrics, track_id, has_plain_lyrics, instrumental) VALUES ('new words', ?, 1, 0)",
                (tid,))
    con.commit()
    con.close()
    with dump.DumpProvider(path) as provider:
        assert provider.sidecar == built and built.stat().st_ino != first.st_ino
        out = provider.lookup(Song("x", "Brand New Tune", "Nobody Yet"))
    assert (out.status, out.lrclib_id, out.plain) == ("found", tid, "new words")
    assert _source(path) == sidecar.source_of(path)

    # an edit that keeps the size and the mtime still moves SQLite's change counter
    second = built.stat()
    st = path.stat()
    con = sqlite3.connect(path)
    con.execute("UPDATE tracks SET album_name = 'x' WHERE id = ?", (tid,))
    con.commit()
    con.close()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and not sidecar.is_current(built, sidecar.source_of(path))
    sidecar.ensure(path)
    assert built.stat().st_ino != second.st_ino and sidecar.is_current(built, sidecar.source_of(path))


def _race(path: str, log: str, barrier) -> None:
    real = sidecar.build

    def build(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # a slow build: the other task arrives while it runs
        return real(*args, **kwargs)

    sidecar.build = build
    barrier.wait()
    out = sidecar.ensure(dump.Path(path))
    assert sidecar.is_current(out, sidecar.source_of(dump.Path(path)))
    with dump.DumpProvider(path) as provider:
        assert provider.sidecar == out


def test_two_tasks_starting_at_once_build_it_once(tiny_sample, tmp_path):
    path = tmp_path / "dump.sqlite3"
    shutil.copy(tiny_sample.lrclib_dump, path)
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_race, args=(str(path), str(log), barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1  # one builder; the others waited and reused its file
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        ["dump.sqlite3", "builds.log", sidecar.path_for(path).name, sidecar.path_for(path).name + ".lock"])


def test_a_half_written_or_foreign_index_is_never_used(tiny_sample, tmp_path, monkeypatch, caplog):
    path = tmp_path / "dump.sqlite3"
    shutil.copy(tiny_sample.lrclib_dump, path)
    target = sidecar.path_for(path)
    truth = [Song(t, e["title"], e["artist"]) for t, e in list(expected(tiny_sample).items())[:300] if e.get("title")]
    with dump.DumpProvider(path, use_sidecar=False) as plain:
        want = plain.lookup_many(truth)

    # a build that dies half-way (disk error) leaves no file under the index's name, no partial file,
    # and the provider answers through the dump's own index
    def broken(out):
        raise sqlite3.OperationalError("disk I/O error")

    real_pairs = sidecar._fill_pairs
    monkeypatch.setattr(sidecar, "_fill_pairs", broken)
    with dump.DumpProvider(path) as provider:
        assert provider.sidecar is None
        assert provider.lookup_many(truth) == want
    assert not target.exists() and not list(tmp_path.glob("*.partial-*"))
    assert "probing the dump's name index instead" in caplog.text
    monkeypatch.setattr(sidecar, "_fill_pairs", real_pairs)

    # a truncated file, a leftover of a killed builder, and another dump's index: all ignored, rebuilt
    good = sidecar.ensure(path).read_bytes()
    target.write_bytes(good[:len(good) // 2])
    (tmp_path / f"{target.name}.partial-999999").write_bytes(good)
    assert not sidecar.is_current(target, sidecar.source_of(path))
    with dump.DumpProvider(path) as provider:
        assert provider.sidecar == target and provider.lookup_many(truth) == want
    assert target.read_bytes() != good[:len(good) // 2]
    assert not list(tmp_path.glob("*.partial-*"))  # the next builder cleared the killed one's file
    other = tmp_path / "other.sqlite3"
    handmade_dump(other, [("Song", "Ann", None, 200.0, "words", False)])
    shutil.copy(sidecar.ensure(other), target)
    assert not sidecar.is_current(target, sidecar.source_of(path))
    with dump.DumpProvider(path) as provider:
        assert provider.sidecar == target and provider.lookup_many(truth) == want
    assert sidecar.is_current(target, sidecar.source_of(path))

    # too little space: a clear error for the plan task; the provider says so and still answers
    target.unlink()
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    with pytest.raises(sidecar.SidecarError, match="GiB free"):
        sidecar.ensure(path)
    assert dump.prepare(path) == {"dump": str(path), "sidecar": None}
    with dump.DumpProvider(path) as provider:
        assert provider.sidecar is None and provider.lookup_many(truth) == want
    assert not target.exists()


def test_an_fts_index_with_its_own_tokenizer_gets_no_word_pairs(tmp_path, monkeypatch):
    """A stemmer stores "run" for "running": checking the song's words against its tokens would skip a
    search that hits, so word pairs are only built for the default tokenizer."""
    from musicrec.sample import lrclib_dump

    monkeypatch.setattr(lrclib_dump, "FTS", lrclib_dump.FTS.replace("content_rowid='id'",
                                                                    "content_rowid='id', tokenize='porter'"))
    path = handmade_dump(tmp_path / "porter.sqlite3", [("Running Man (feat. Bo) (Live)", "Ann", None, 200.0, "w", False)])
    song = Song("a", "Running Man (Live)", "Ann")  # found by the search only: the credit is inside the title
    with dump.DumpProvider(path) as provider:
        assert provider.sidecar and not provider.pairs
        assert (provider.lookup(song).status, provider.lookup(song).lrclib_id) == ("found", 1)
