"""Benchmark: the lyrics providers — the LRCLIB dump provider and the API client — on generated data.

1. Dump provider. A seeded LRCLIB-schema SQLite dump (``musicrec.sample.lrclib_dump.SCHEMA`` +
   ``FTS``, ``*_lower`` columns by ``musicrec.lyrics.normalize.lrclib_lower``) of ``--tracks``
   tracks, every one with a lyrics row (~5 % instrumental, else a few hundred bytes of plain text;
   ``last_lyrics_id`` precomputed, the trigger and indexes created after the bulk insert, then the
   FTS5 index rebuilt). Names are 1-5 (titles) / 1-3 (artists) words of a vocabulary of pseudo-words,
   some titles with a ``(feat. X)`` credit, some names joined by ``&``/``and``. The file is cached
   under ``bench/results/`` keyed by (tracks, seed, generator version).
   ``--songs`` catalog songs: ~60 % one of the dump's tracks spelled the same, ~10 % spelling variants
   (upper case, the credit dropped or added, ``&`` <-> ``and`` in title or artist), ~30 % not in the
   dump. The lookup index beside the dump (``musicrec.lyrics.sidecar``) is built first, timed
   (reused when current; ``--rebuild-sidecar`` forces a timed build), then timed:
   ``DumpProvider(path).lookup_many`` over batches of 500 (as ``enrich.run_dump_chunk`` calls it),
   and, as the baseline in the same run, the same songs through the dump's own name index
   (``use_sidecar=False``): the ratio, and how many outcomes differ (must be 0). Target: >= 20,000
   songs/s. Accuracy: the right ``lrclib_id`` (found / instrumental) for the songs in the dump,
   ``not_found`` for the others, per kind of song. Below target, one-word titles and longer ones
   are timed apart (a common title has many same-named records to score).
2. API provider, ``musicrec.lyrics.lrclib.LrclibApi`` driven by ``enrich._api`` (the DAG's bounded
   window) against the local LRCLIB-compatible server ``tests.lrclib_server.LrclibServer`` on a
   small dump of the same generator (``--api-tracks``): (a) rate limit off; (b) the project's
   default 2 requests/s on ``--rate-songs`` songs, the server log's observed max rate must be <= 2;
   (c) 20 % injected faults (429/500/503/slow/truncated, 4 % each; Retry-After 1 s, slow 1 s against
   a 0.5 s client timeout, tries=4, backoff 0.05 s) on the first ``--fault-songs`` songs of (a):
   zero songs lost — every song gets an outcome, none that (a) found (or found instrumental) ends
   ``not_found``; songs ending ``error`` are retried by a later run and counted.
   Server and client share this process (the server's threads and the client's event loop compete
   for the GIL), so the rate-off figure is a floor for the client, not LRCLIB's speed.

    python bench/lyrics.py                                   # 1M tracks, 100k songs, 2,000 API songs
    python bench/lyrics.py --tracks 100000 --songs 20000     # quicker
    python bench/lyrics.py --skip-api                        # the dump provider only
    python bench/lyrics.py --profile                         # + cProfile of the dump lookups
    python bench/lyrics.py --skip-api --rebuild-sidecar      # + a timed build of the lookup index

Peak RSS (``ru_maxrss``) includes the dump pages the provider touched through its 1 GiB mmap.
Figures are written as JSON to ``bench/results/lyrics.json`` (``--json PATH`` to change).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import resource
import sqlite3
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))
sys.path.insert(0, str(REPO))  # tests.lrclib_server

from musicrec.lyrics.match import Outcome, Song  # noqa: E402
from musicrec.lyrics.normalize import lrclib_lower  # noqa: E402
from musicrec.sample.lrclib_dump import FTS, SCHEMA  # noqa: E402

RESULTS = REPO / "bench" / "results"
GEN_VERSION = 1  # bump when the generator changes: the cached dumps are keyed by it
TARGET_SONGS_PER_S = 20_000
BATCH = 500
DEFAULT_RATE = 2.0  # enrich.run_api_chunk's default
SHARE_EXACT, SHARE_VARIANT = 0.60, 0.10  # of the songs; the rest are not in the dump
SHARE_INSTRUMENTAL, SHARE_FEAT, SHARE_TITLE_AND, SHARE_ARTIST_AND = 0.05, 0.10, 0.06, 0.08
VARIANT_KINDS = ("upper", "feat_dropped", "feat_added", "title_and", "artist_and")
_RESERVED = {"feat", "ft", "featuring", "with", "and"}  # words the credit / "&" rules give a meaning
_ONSETS = ["b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "ch", "dr",
           "gl", "kr", "pl", "sh", "st", "th", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ee", "y"]
_CODAS = ["", "", "", "n", "r", "s", "l", "x", "nd", "rk"]


# --------------------------------------------------------------------------------------------
# generated names
# --------------------------------------------------------------------------------------------

@dataclass
class Names:
    """The dump's tracks (index i is lrclib id i + 1) and what the songs are built from."""

    titles: list[str]
    artists: list[str]
    instrumental: bytearray
    keys: set[tuple[str, str]]  # (title key, artist key): distinct per track, as match_key sees them
    has_feat: bytearray
    vocab: list[str]


def _vocabulary(rnd: random.Random, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        w = "".join(rnd.choice(_ONSETS) + rnd.choice(_VOWELS) for _ in range(rnd.choice((1, 1, 2, 2, 2, 3))))
        w += rnd.choice(_CODAS)
        if w not in _RESERVED:
            words.add(w)
    return sorted(words)


class _Gen:
    def __init__(self, rnd: random.Random, vocab: list[str]) -> None:
        self.rnd = rnd
        self.cap = [w.capitalize() for w in vocab]

    def words(self, k: int) -> list[str]:
        return self.rnd.choices(self.cap, k=k)

    def title(self) -> tuple[str, str]:
        """(title without credit, its key): 1-5 words, some joined by ``&`` or ``and``."""
        r = self.rnd
        ws = self.words(r.choices((1, 2, 3, 4, 5), (20, 30, 25, 15, 10))[0])
        if len(ws) >= 2 and r.random() < SHARE_TITLE_AND:
            j = r.randrange(1, len(ws))
            conn = "&" if r.random() < 0.7 else "and"
            ws = [*ws[:j], conn, *ws[j:]]
        return " ".join(ws), " ".join("and" if w == "&" else w.lower() for w in ws)

    def artist(self, max_words: int = 3) -> tuple[str, str]:
        r = self.rnd
        if max_words > 1 and r.random() < SHARE_ARTIST_AND:  # a duo: "A & B" / "A and B"
            a, b = self.words(r.choice((1, 2))), self.words(r.choice((1, 1, 2)))
            ws = [*a, "&" if r.random() < 0.7 else "and", *b]
        else:
            ws = self.words(r.choices((1, 2, 3), (45, 40, 15))[0])
        return " ".join(ws), " ".join("and" if w == "&" else w.lower() for w in ws)

    def credit(self) -> str:
        return " ".join(self.words(self.rnd.choice((1, 1, 2))))


def generate_names(n: int, seed: int, vocab_size: int) -> Names:
    """Deterministic in (n, seed, vocab_size): titles/artists with distinct match keys."""
    rnd = random.Random(f"bench-lyrics:{seed}")
    vocab = _vocabulary(rnd, vocab_size)
    gen = _Gen(rnd, vocab)
    titles, artists, keys = [], [], set()
    has_feat, instrumental = bytearray(n), bytearray(n)
    for i in range(n):
        while True:
            title, tkey = gen.title()
            artist, akey = gen.artist()
            if (tkey, akey) not in keys:
                break
        keys.add((tkey, akey))
        if rnd.random() < SHARE_FEAT:
            title = f"{title} (feat. {gen.credit()})"
            has_feat[i] = 1
        titles.append(title)
        artists.append(artist)
        instrumental[i] = rnd.random() < SHARE_INSTRUMENTAL
    return Names(titles, artists, instrumental, keys, has_feat, vocab)


# --------------------------------------------------------------------------------------------
# the dump
# --------------------------------------------------------------------------------------------

def _statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


_STAMPS = [f"2023-{9 + i % 4:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.000+00:00"
           for i in range(997)]


def _stamp(i: int) -> str:
    return _STAMPS[i % 997]


def write_dump(path: Path, names: Names, seed: int) -> dict:
    """Bulk-insert tracks + lyrics, then the trigger, the indexes and the FTS5 index; returns timings."""
    started = time.monotonic()
    n = len(names.titles)
    rnd = random.Random(f"bench-lyrics-text:{seed}")
    words = names.vocab[:2000] + ["love", "night", "heart", "baby", "oh", "la", "yeah", "you", "me"]
    pool = [" ".join(rnd.choices(words, k=rnd.randint(3, 8))).capitalize() for _ in range(5000)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp, isolation_level=None)
    con.execute("PRAGMA journal_mode = OFF")
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA cache_size = -262144")  # 256 MiB for the index builds
    con.execute("PRAGMA temp_store = MEMORY")
    stmts = _statements(SCHEMA)
    tables = [s for s in stmts if s.upper().startswith("CREATE TABLE")]
    later = [s for s in stmts if not s.upper().startswith("CREATE TABLE")]  # the trigger + indexes
    for s in tables:
        con.execute(s)

    def tracks():
        rng = random.Random(f"bench-lyrics-tracks:{seed}")
        gen = _Gen(rng, names.vocab)
        for i in range(n):
            album = " ".join(gen.words(rng.choice((1, 2, 3))))
            title, artist = names.titles[i], names.artists[i]
            stamp = _stamp(i)
            yield (i + 1, title, lrclib_lower(title), artist, lrclib_lower(artist), album, lrclib_lower(album),
                   float(rng.randint(900, 4800)) / 10, i + 1, stamp, stamp)

    def lyrics():
        rng = random.Random(f"bench-lyrics-rows:{seed}")
        for i in range(n):
            stamp = _stamp(i)
            if names.instrumental[i]:
                yield (i + 1, None, None, i + 1, 0, 0, 1, "lrclib", stamp, stamp)
            else:
                text = "\n".join(rng.choices(pool, k=rng.randint(4, 9)))
                yield (i + 1, text, None, i + 1, 1, 0, 0, "lrclib", stamp, stamp)

    t0 = time.monotonic()
    con.execute("BEGIN")
    con.executemany("INSERT INTO tracks (id, name, name_lower, artist_name, artist_name_lower, album_name,"
                    " album_name_lower, duration, last_lyrics_id, created_at, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)", tracks())
    con.executemany("INSERT INTO lyrics (id, plain_lyrics, synced_lyrics, track_id, has_plain_lyrics,"
                    " has_synced_lyrics, instrumental, source, created_at, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)", lyrics())
    con.execute("COMMIT")
    t_insert = time.monotonic() - t0
    t0 = time.monotonic()
    con.execute("BEGIN")
    for s in later:
        con.execute(s)
    con.execute("COMMIT")
    t_index = time.monotonic() - t0
    t0 = time.monotonic()
    con.executescript(FTS)
    t_fts = time.monotonic() - t0
    con.close()
    tmp.replace(path)
    return {"insert_seconds": round(t_insert, 2), "index_seconds": round(t_index, 2),
            "fts_seconds": round(t_fts, 2), "write_seconds": round(time.monotonic() - started, 2)}


def dump_for(tracks: int, seed: int, vocab: int, label: str) -> tuple[Path, Names, dict]:
    """The cached dump of (tracks, seed, vocab) and its names (always regenerated: deterministic)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"lrclib-bench-v{GEN_VERSION}-t{tracks}-v{vocab}-s{seed}.sqlite3"
    t0 = time.monotonic()
    names = generate_names(tracks, seed, vocab)
    info: dict = {"path": str(path), "tracks": tracks, "names_seconds": round(time.monotonic() - t0, 2)}
    if path.exists():
        info["cached"] = True
    else:
        info["cached"] = False
        info |= write_dump(path, names, seed)
    info["bytes"] = path.stat().st_size
    gen = f"generated in {info['write_seconds']:.1f} s (insert {info['insert_seconds']:.1f} s, indexes " \
          f"{info['index_seconds']:.1f} s, FTS {info['fts_seconds']:.1f} s)" if not info["cached"] else "cached"
    print(f"{label}: {tracks:,} tracks, names {info['names_seconds']:.1f} s, dump {gen}, "
          f"{info['bytes'] / 2**20:,.0f} MiB  ({path.name})", flush=True)
    return path, names, info


# --------------------------------------------------------------------------------------------
# songs with known answers
# --------------------------------------------------------------------------------------------

@dataclass
class Case:
    song: Song
    kind: str  # exact | upper | feat_dropped | feat_added | title_and | artist_and | new
    status: str  # the right status: found | instrumental | not_found
    lrclib_id: int | None


def _swap_and(text: str) -> str | None:
    if " & " in text:
        return text.replace(" & ", " and ", 1)
    if " and " in text:
        return text.replace(" and ", " & ", 1)
    return None


def _variant(kind: str, names: Names, i: int, rnd: random.Random) -> tuple[str, str] | None:
    """Track i's (title, artist) spelled the ``kind`` way, or None where that does not apply."""
    title, artist = names.titles[i], names.artists[i]
    if kind == "upper":
        return (title.upper(), artist) if rnd.random() < 0.5 else (title, artist.upper())
    if kind == "feat_dropped":
        return (title[:title.index(" (feat. ")], artist) if names.has_feat[i] else None
    if kind == "feat_added":
        return None if names.has_feat[i] else (f"{title} (feat. {names.artists[rnd.randrange(len(names.titles))]})",
                                               artist)
    if kind == "title_and":
        return None if (t := _swap_and(title)) is None else (t, artist)
    if kind == "artist_and":
        return None if (a := _swap_and(artist)) is None else (title, a)
    raise ValueError(kind)


def build_songs(names: Names, count: int, seed: int) -> list[Case]:
    rnd = random.Random(f"bench-lyrics-songs:{seed}:{count}")
    n = len(names.titles)
    n_exact, n_variant = round(count * SHARE_EXACT), round(count * SHARE_VARIANT)
    n_in = min(n, n_exact + n_variant)
    picked = rnd.sample(range(n), n_in)
    cases: list[Case] = []
    for j, i in enumerate(picked):
        title, artist = names.titles[i], names.artists[i]
        kind = "exact"
        if j >= n_exact:  # a variant: the kind first (evenly), then a track it applies to
            kind = VARIANT_KINDS[(j - n_exact) % len(VARIANT_KINDS)]
            while (v := _variant(kind, names, i, rnd)) is None:
                i = rnd.randrange(n)
            title, artist = v
        status = "instrumental" if names.instrumental[i] else "found"
        cases.append(Case(Song(f"s{len(cases):07d}", title, artist), kind, status, i + 1))
    gen = _Gen(random.Random(f"bench-lyrics-new:{seed}:{count}"), names.vocab)
    while len(cases) < count:
        title, tkey = gen.title()
        artist, akey = gen.artist()
        if (tkey, akey) in names.keys:
            continue
        if gen.rnd.random() < SHARE_FEAT:
            title = f"{title} (feat. {gen.credit()})"
        cases.append(Case(Song(f"s{len(cases):07d}", title, artist), "new", "not_found", None))
    rnd.shuffle(cases)
    return cases


def grade(cases: list[Case], outcomes: dict[str, Outcome]) -> dict:
    """Per kind: songs, right, and how the others went wrong."""
    per: dict[str, Counter] = {}
    for c in cases:
        o = outcomes.get(c.song.track_id)
        cnt = per.setdefault(c.kind, Counter())
        cnt["songs"] += 1
        if o is None:
            cnt["no outcome"] += 1
        elif o.status == "error":
            cnt["error"] += 1
        elif c.status == "not_found":
            cnt["right" if o.status == "not_found" else "false match"] += 1
        elif o.status == "not_found":
            cnt["missed"] += 1
        elif o.status == c.status and o.lrclib_id == c.lrclib_id:
            cnt["right"] += 1
        else:
            cnt["wrong record"] += 1
    total = Counter()
    for cnt in per.values():
        total.update(cnt)
    per["all"] = total
    return {k: dict(v) for k, v in per.items()}


def print_grades(label: str, grades: dict) -> None:
    cols = ("right", "missed", "wrong record", "false match", "error", "no outcome")
    print(f"{label}: {'kind':13s} {'songs':>7s} " + " ".join(f"{c:>12s}" for c in cols) + f" {'accuracy':>9s}")
    order = ["exact", "upper", "feat_dropped", "feat_added", "title_and", "artist_and", "new", "all"]
    for kind in [k for k in order if k in grades]:
        g = grades[kind]
        acc = g.get("right", 0) / g["songs"] if g["songs"] else 0.0
        print(f"{label}: {kind:13s} {g['songs']:7,d} " + " ".join(f"{g.get(c, 0):12,d}" for c in cols)
              + f" {acc:9.2%}")


# --------------------------------------------------------------------------------------------
# 1. dump provider
# --------------------------------------------------------------------------------------------

def _sidecar(path: Path, rebuild: bool) -> dict:
    """The lookup index beside the dump, built (timed) unless a current one is there."""
    from musicrec.lyrics import sidecar

    target = sidecar.path_for(path)
    if rebuild:
        target.unlink(missing_ok=True)
    cached = sidecar.is_current(target, sidecar.source_of(path))
    t0 = time.monotonic()
    sidecar.ensure(path)
    seconds = time.monotonic() - t0
    con = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    con.close()
    out = {"path": str(target), "cached": cached, "bytes": target.stat().st_size, "key_rows": int(meta["rows"]),
           "word_pairs": int(meta["pairs"]), "build_seconds": None if cached else round(seconds, 2)}
    built = "cached (--rebuild-sidecar to time a build)" if cached else f"built in {seconds:.1f} s"
    print(f"lookup index: {built}, {out['bytes'] / 2**20:,.0f} MiB ({out['bytes'] / max(1, _tracks(path)):.0f} "
          f"bytes/track), {out['key_rows']:,} key rows, {out['word_pairs']:,} word pairs  ({target.name})", flush=True)
    return out


def _tracks(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM tracks").fetchone()[0]
    finally:
        con.close()


def _time_provider(path: Path, songs: list[Song], profiler: cProfile.Profile | None,
                   **kwargs) -> tuple[dict[str, Outcome], float, float, float]:
    """(outcomes, seconds in lookup_many, CPU seconds, seconds to open) over batches of ``BATCH``."""
    from musicrec.lyrics.dump import DumpProvider

    outcomes: dict[str, Outcome] = {}
    t0 = time.monotonic()
    provider = DumpProvider(path, **kwargs)
    t_open = time.monotonic() - t0
    seconds = 0.0
    cpu0 = time.process_time()
    try:
        for start in range(0, len(songs), BATCH):
            batch = songs[start:start + BATCH]
            if profiler:
                profiler.enable()
            t = time.perf_counter()
            result = provider.lookup_many(batch)
            seconds += time.perf_counter() - t
            if profiler:
                profiler.disable()
            outcomes.update((s.track_id, o) for s, o in zip(batch, result, strict=True))
    finally:
        provider.close()
    return outcomes, seconds, time.process_time() - cpu0, t_open


def bench_dump(args: argparse.Namespace) -> dict:
    print(f"\n=== dump provider: --tracks {args.tracks:,}, --songs {args.songs:,}, batches of {BATCH}")
    path, names, info = dump_for(args.tracks, args.seed, args.vocab, "dump")
    t0 = time.monotonic()
    cases = build_songs(names, args.songs, args.seed)
    kinds = Counter(c.kind for c in cases)
    print(f"songs: {len(cases):,} built in {time.monotonic() - t0:.1f} s: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())))
    del names
    songs = [c.song for c in cases]
    index = _sidecar(path, args.rebuild_sidecar)
    profiler = cProfile.Profile() if args.profile else None
    outcomes, seconds, cpu, t_open = _time_provider(path, songs, profiler)
    rate = len(songs) / seconds
    # baseline, same run: the dump's own name index (no lookup index), as before the sidecar
    base_out, base_s, _, _ = _time_provider(path, songs, None, use_sidecar=False)
    base_rate = len(songs) / base_s
    differ = sum(outcomes[k] != o for k, o in base_out.items())
    statuses = Counter(o.status for o in outcomes.values())
    grades = grade(cases, outcomes)
    print(f"dump: {'':22s} {'songs':>9s} {'seconds':>9s} {'songs/s':>10s} {'target':>9s}  "
          f"{'found':>8s} {'instr.':>7s} {'not_found':>9s} {'error':>6s}")
    for label, secs, st, r in (("with the lookup index", seconds, statuses, rate),
                               ("baseline (dump index)", base_s, Counter(o.status for o in base_out.values()),
                                base_rate)):
        print(f"dump: {label:22s} {len(songs):9,d} {secs:9.2f} {r:10,.0f} {TARGET_SONGS_PER_S:9,d}  "
              f"{st['found']:8,d} {st['instrumental']:7,d} {st['not_found']:9,d} "
              f"{st['error']:6,d}   {'OK' if r >= TARGET_SONGS_PER_S else 'BELOW TARGET'}")
    print(f"dump: {rate / base_rate:.2f}x the baseline; outcomes that differ from the baseline: {differ:,} "
          f"(status, record, lyrics, score)")
    print(f"dump: (open {t_open * 1000:.0f} ms; CPU {cpu:.1f} s for {seconds:.1f} s of lookups)")
    print_grades("dump", grades)
    split = _by_title_length(path, songs) if rate < TARGET_SONGS_PER_S else {}
    out = {"dump": info, "lookup_index": index, "songs": len(songs), "kinds": dict(kinds),
           "open_seconds": round(t_open, 3), "seconds": round(seconds, 3), "songs_per_s": round(rate, 1),
           "target_songs_per_s": TARGET_SONGS_PER_S, "meets_target": rate >= TARGET_SONGS_PER_S,
           "baseline_seconds": round(base_s, 3), "baseline_songs_per_s": round(base_rate, 1),
           "ratio": round(rate / base_rate, 2), "differ_from_baseline": differ,
           "statuses": dict(statuses), "accuracy": grades, "by_title_length": split}
    if profiler:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(25)
        print("\ncProfile of lookup_many (tottime, top 25):")
        print("\n".join(line for line in buf.getvalue().splitlines() if line.strip())[:8000])
    return out


def _by_title_length(path: Path, songs: list[Song], limit: int = 5000) -> dict:
    """Below target: the same lookups for one-word titles and for longer ones, timed apart (a fresh
    provider; each group's first ``limit`` songs)."""
    from musicrec.lyrics.dump import DumpProvider
    from musicrec.lyrics.normalize import strip_credits

    groups = {"1-word titles": [], "2+ word titles": []}
    for s in songs:
        groups["1-word titles" if len(strip_credits(s.title).split()) == 1 else "2+ word titles"].append(s)
    out = {}
    print(f"dump: below target — by title length (up to {limit:,} songs each, timed apart):")
    with DumpProvider(path) as provider:
        for label, group in groups.items():
            share = len(group) / len(songs)
            group = group[:limit]
            t = time.perf_counter()
            for start in range(0, len(group), BATCH):
                provider.lookup_many(group[start:start + BATCH])
            seconds = time.perf_counter() - t
            out[label] = {"share": round(share, 4), "songs": len(group), "seconds": round(seconds, 3),
                          "songs_per_s": round(len(group) / seconds, 1),
                          "us_per_song": round(seconds / len(group) * 1e6, 1)}
            print(f"dump:   {label:15s} {share:6.1%} of the songs: {len(group) / seconds:9,.0f} songs/s "
                  f"({seconds / len(group) * 1e6:,.0f} us/song)")
    return out


# --------------------------------------------------------------------------------------------
# 2. API provider
# --------------------------------------------------------------------------------------------

def _api_run(server, cases: list[Case], **api_kwargs) -> tuple[dict, dict[str, Outcome]]:
    from musicrec.lyrics import enrich

    outcomes: dict[str, Outcome] = {}
    dup = 0

    def sink(song: Song, attempts: int, outcome: Outcome) -> None:
        nonlocal dup
        dup += song.track_id in outcomes
        outcomes[song.track_id] = outcome

    server.reset_log()
    t0 = time.monotonic()
    stats = asyncio.run(enrich._api([(c.song, 0) for c in cases], server.url, api_kwargs, sink))
    seconds = time.monotonic() - t0
    log = server.requests
    fig = {"songs": len(cases), "outcomes": len(outcomes), "duplicate_outcomes": dup, "seconds": round(seconds, 3),
           "requests": len(log), "client_requests": stats["requests"], "client_faults": stats["faults"],
           "throttled": stats["throttled"], "requests_per_s": round(len(log) / seconds, 2),
           "songs_per_s": round(len(outcomes) / seconds, 2),
           "statuses": dict(Counter(o.status for o in outcomes.values())),
           "server_faults": dict(Counter(r.fault for r in log if r.fault)),
           "observed_max_rate": _observed(log), "api_kwargs": api_kwargs}
    return fig, outcomes


def _observed(log) -> float:
    from tests.lrclib_server import observed_max_rate

    return observed_max_rate(log)


def bench_api(args: argparse.Namespace) -> dict:
    from tests.lrclib_server import FaultPlan, LrclibServer

    print(f"\n=== API provider against tests.lrclib_server (in this process): --api-songs {args.api_songs:,}")
    path, names, info = dump_for(args.api_tracks, args.seed, args.vocab, "api dump")
    cases = build_songs(names, args.api_songs, args.seed)
    base = {"concurrency": 8, "timeout_s": 10.0, "tries": 3, "backoff_s": 0.5}
    runs: dict[str, dict] = {}
    with LrclibServer(path) as server:
        fig_a, out_a = _api_run(server, cases, **base, rate_per_s=0)
        fig_a["accuracy"] = grade(cases, out_a)
        runs["a_rate_off"] = fig_a
        rate_cases = cases[:args.rate_songs]
        fig_b, _ = _api_run(server, rate_cases, **base, rate_per_s=DEFAULT_RATE)
        fig_b["limit"] = DEFAULT_RATE
        fig_b["within_limit"] = fig_b["observed_max_rate"] <= DEFAULT_RATE
        times = sorted(r.t for r in server.requests)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        k = int(DEFAULT_RATE)  # the span of limit + 1 consecutive arrivals: < 1 s means over the limit
        fig_b |= {"min_gap_s": round(min(gaps), 4), "median_gap_s": round(statistics.median(gaps), 4),
                  "min_span_s": round(min(times[i + k] - times[i] for i in range(len(times) - k)), 4)}
        runs["b_rate_2"] = fig_b
        plan = FaultPlan(rate_429=0.04, rate_500=0.04, rate_503=0.04, rate_slow=0.04, rate_truncated=0.04,
                         retry_after_s=1, slow_s=1.0, seed=args.seed)
        server.faults = plan
        fault_cases = cases[:args.fault_songs]
        fig_c, out_c = _api_run(server, fault_cases, concurrency=8, timeout_s=0.5, tries=4, backoff_s=0.05,
                                rate_per_s=0)
        server.faults = None
    fig_c["fault_rate"] = round(sum(plan.rates()), 4)
    missing = [c.song.track_id for c in fault_cases if c.song.track_id not in out_c]
    turned = [c.song.track_id for c in fault_cases if c.song.track_id in out_c
              and out_a[c.song.track_id].status in ("found", "instrumental")
              and out_c[c.song.track_id].status == "not_found"]
    changed = [c.song.track_id for c in fault_cases if c.song.track_id in out_c
               and out_c[c.song.track_id].status != "error"
               and (out_c[c.song.track_id].status, out_c[c.song.track_id].lrclib_id)
               != (out_a[c.song.track_id].status, out_a[c.song.track_id].lrclib_id)]
    errors = [o.error for o in out_c.values() if o.status == "error"]
    fig_c |= {"no_outcome": len(missing), "found_turned_not_found": len(turned), "settled_differently": len(changed),
              "songs_lost": len(missing) + len(turned), "errors": len(errors),
              "error_kinds": dict(Counter((e or "").split(" (")[0] for e in errors))}
    runs["c_faults_20pct"] = fig_c

    print(f"api: {'run':28s} {'songs':>6s} {'seconds':>8s} {'requests':>8s} {'req/s':>8s} {'songs/s':>8s} "
          f"{'max rate':>8s} {'faults':>6s} {'429s':>5s} {'errors':>6s}  statuses")
    labels = {"a_rate_off": "(a) rate limit off", "b_rate_2": f"(b) rate limit {DEFAULT_RATE:g}/s",
              "c_faults_20pct": "(c) 20 % faults, rate off"}
    for key, fig in runs.items():
        st = fig["statuses"]
        print(f"api: {labels[key]:28s} {fig['songs']:6,d} {fig['seconds']:8.1f} {fig['requests']:8,d} "
              f"{fig['requests_per_s']:8.1f} {fig['songs_per_s']:8.1f} {fig['observed_max_rate']:8.1f} "
              f"{fig['client_faults']:6,d} {fig['throttled']:5,d} {st.get('error', 0):6,d}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(st.items())))
    verdict = "OK" if fig_b["within_limit"] else (
        f"EXCEEDED: {int(DEFAULT_RATE) + 1} arrivals within {fig_b['min_span_s']:.3f} s (the client spaces its "
        f"requests exactly {1 / DEFAULT_RATE:g} s apart, arrival jitter does the rest; "
        f"{'only one boundary request over, which' if fig_b['observed_max_rate'] <= DEFAULT_RATE + 1 else 'more than'}"
        " tests/integration/test_lyrics_api.py tolerates)")
    print(f"api: (b) observed max rate {fig_b['observed_max_rate']:g} requests/s in any 1 s window (server log), "
          f"limit {DEFAULT_RATE:g}: {verdict}")
    print(f"api: (b) arrival gaps: min {fig_b['min_gap_s']:.3f} s, median {fig_b['median_gap_s']:.3f} s")
    print("api: (c) server faults injected: "
          + ", ".join(f"{k} {v}" for k, v in sorted(fig_c["server_faults"].items())))
    print(f"api: (c) songs without an outcome: {len(missing)}; found/instrumental in (a) but not_found in (c): "
          f"{len(turned)}; settled differently from (a): {len(changed)}")
    print(f"api: (c) ended error (retried by a later run): {len(errors)}"
          + (" — " + ", ".join(f"{k} {v}" for k, v in fig_c["error_kinds"].items()) if errors else ""))
    print(f"songs lost: {fig_c['songs_lost']}")
    print_grades("api (a)", fig_a["accuracy"])
    return {"dump": info, "runs": runs}


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=1_000_000, help="tracks in the dump (default 1,000,000)")
    parser.add_argument("--songs", type=int, default=100_000, help="songs looked up in the dump")
    parser.add_argument("--vocab", type=int, default=4000, help="pseudo-words the names are made of")
    parser.add_argument("--api-tracks", type=int, default=20_000, help="tracks in the API server's dump")
    parser.add_argument("--api-songs", type=int, default=2000, help="songs of the API run (a)")
    parser.add_argument("--rate-songs", type=int, default=30, help="songs of the rate-limited run (b)")
    parser.add_argument("--fault-songs", type=int, default=1000, help="songs of the faults run (c), from (a)")
    parser.add_argument("--skip-dump", action="store_true")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the dump lookups")
    parser.add_argument("--rebuild-sidecar", action="store_true", help="delete and rebuild (and time) the lookup index")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=RESULTS / "lyrics.json")
    args = parser.parse_args()
    args.fault_songs = min(args.fault_songs, args.api_songs)

    started = time.monotonic()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; SQLite {sqlite3.sqlite_version}; "
          f"Python {sys.version.split()[0]}")
    results: dict = {"at": datetime.now(UTC).isoformat(), "cores": os.cpu_count(), "seed": args.seed,
                     "sqlite": sqlite3.sqlite_version, "args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_dump:
        results["dump_provider"] = bench_dump(args)
    if not args.skip_api:
        results["api_provider"] = bench_api(args)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(f"\nwall {results['seconds']:.0f} s; peak RSS: {results['peak_rss_gb']:.2f} GB (ru_maxrss)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
