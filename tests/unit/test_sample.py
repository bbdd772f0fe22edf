"""The sample generator: formats, planted counts, determinism, taste signal (docs/sample-data.md).

Everything is checked by re-parsing the written bytes here, independently of the generator's
own bookkeeping; the cleaner's precedence is restated below on purpose.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sqlite3
import tarfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from musicrec.ids import text_key
from musicrec.sample import PRESETS, SampleResult, generate
from musicrec.sample import lastfm as lastfm_mod
from musicrec.sample.__main__ import main as cli_main
from musicrec.sample.names import lrclib_lower

EVENTS = "lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv"
PROFILES = "lastfm-dataset-1K/userid-profile.tsv"
REASONS = ("invalid_utf8", "column_count", "empty_user", "bad_timestamp", "empty_track")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
LRC = re.compile(r"^\[\d{2}:\d{2}\.\d{2}\] ")


# --- an independent reader of the archive ---------------------------------------------------------
def read_members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, mode="r|gz") as tar:  # stream mode, like the importer
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def parse_ts(value: str) -> datetime | None:
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def classify(raw: bytes) -> str | None:
    """The cleaner's precedence: invalid_utf8 > column_count > empty_user > bad_timestamp > empty_track."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    f = line.split("\t")
    if len(f) != 6:
        return "column_count"
    if not f[0].strip():
        return "empty_user"
    if parse_ts(f[1]) is None:
        return "bad_timestamp"
    if not f[5].strip() and not f[4].strip():
        return "empty_track"
    return None


def track_key(f: list[str]) -> str:
    return f[4] or f"{text_key(f[3])}\t{text_key(f[5])}"


class Parsed:
    def __init__(self, tsv: bytes) -> None:
        assert tsv.endswith(b"\n")
        self.lines = tsv[:-1].split(b"\n")
        self.reasons: Counter[str] = Counter()
        self.bad: list[tuple[str, bytes]] = []
        self.valid: list[list[str]] = []  # every valid line, duplicates included, in file order
        self.valid_raw: list[bytes] = []
        for raw in self.lines:
            reason = classify(raw)
            if reason:
                self.reasons[reason] += 1
                self.bad.append((reason, raw))
            else:
                self.valid.append(raw.decode().split("\t"))
                self.valid_raw.append(raw)


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SampleResult:
    return generate(preset="tiny", out_dir=tmp_path_factory.mktemp("tiny"), seed=42)


@pytest.fixture(scope="module")
def tiny_parsed(tiny: SampleResult) -> Parsed:
    return Parsed(read_members(tiny.archive)[EVENTS])


@pytest.fixture(scope="module")
def truth(tiny: SampleResult) -> dict:
    assert tiny.truth is not None
    return json.loads(tiny.truth.read_text())


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- tests ---------------------------------------------------------------------------------------
def test_presets_shape() -> None:
    assert {"tiny", "small", "lastfm1k"} <= set(PRESETS)
    big = PRESETS["lastfm1k"]
    assert (big.users, big.events, big.start.isoformat(), big.end.isoformat()) == \
        (992, 19_150_868, "2005-02-14", "2009-05-04")
    assert not big.with_lrclib and not big.with_landing
    with pytest.raises(AttributeError):
        big.users = 1  # type: ignore[misc]  # frozen


def test_tiny_is_fast_and_deterministic(tiny: SampleResult, tmp_path: Path) -> None:
    started = time.monotonic()
    again = generate(preset="tiny", out_dir=tmp_path / "a", seed=42)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"tiny took {elapsed:.2f} s"  # ~0.4 s here; the budget is 1 s on an idle machine
    first, second = digests(tiny.out_dir), digests(again.out_dir)
    assert set(first) >= {"lastfm-dataset-1K.tar.gz", "lrclib-dump.sqlite3", "sample.json", "truth.json"}
    assert any(k.startswith("landing/date=") for k in first)
    assert first == second
    other = generate(preset="tiny", out_dir=tmp_path / "b", seed=7, with_lrclib=False, with_landing=False)
    assert digests(other.out_dir)["lastfm-dataset-1K.tar.gz"] != first["lastfm-dataset-1K.tar.gz"]


def test_chunked_regeneration_gives_the_same_bytes(tiny: SampleResult, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # lastfm1k redraws every user in pass 2 instead of caching: the bytes must not change.
    monkeypatch.setattr(lastfm_mod, "CACHE_MAX_EVENTS", 0)
    res = generate(preset="tiny", out_dir=tmp_path, seed=42, with_lrclib=False, with_landing=False)
    assert res.archive.read_bytes() == tiny.archive.read_bytes()


def test_archive_is_a_deterministic_tar_gz(tiny: SampleResult) -> None:
    head = tiny.archive.read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08" and not head[3] & 0x08  # gzip, no file name stored
    with tarfile.open(tiny.archive, mode="r:gz") as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert {EVENTS, PROFILES} <= set(names)
        assert len({m.mtime for m in tar.getmembers()}) == 1


def test_events_tsv_uses_the_real_formats(tiny: SampleResult, tiny_parsed: Parsed) -> None:
    c = tiny.counts
    p = tiny_parsed
    assert len(p.lines) == c["lines_total"]
    for f in p.valid:
        assert re.fullmatch(r"user_\d{6}", f[0]) and TS.match(f[1])
        assert f[2] == "" or UUID.match(f[2])
        assert f[4] == "" or UUID.match(f[4])
        for name in (f[3], f[5]):
            assert name and name == name.strip() and "\r" not in name
    titles = [f[5] for f in p.valid]
    assert any(not t.isascii() for t in titles) and any('"' in t for t in titles) and any("'" in t for t in titles)
    assert any(re.search(r"[\u3040-\u30ff\u4e00-\u9fff\u0400-\u04ff]", f[3] + f[5]) for f in p.valid)
    # users in blocks, each block newest first
    order: list[str] = []
    last: dict[str, datetime] = {}
    for f in p.valid:
        ts = parse_ts(f[1])
        assert ts is not None
        if not order or order[-1] != f[0]:
            assert f[0] not in last, f"{f[0]} appears in two blocks"
            order.append(f[0])
        else:
            assert ts <= last[f[0]]
        last[f[0]] = ts
    assert order == sorted(order)
    assert c["first_date"] == PRESETS["tiny"].start.isoformat() and c["last_date"] == PRESETS["tiny"].end.isoformat()


def test_same_track_always_has_the_same_names(tiny_parsed: Parsed) -> None:
    by_mbid: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    by_name: dict[tuple[str, str], set[str]] = defaultdict(set)
    artist_mbid: dict[str, set[str]] = defaultdict(set)
    for f in tiny_parsed.valid:
        if f[4]:
            by_mbid[f[4]].add((f[2], f[3], f[5]))
        by_name[(text_key(f[3]), text_key(f[5]))].add(f[4])
        artist_mbid[f[3]].add(f[2])
    assert all(len(v) == 1 for v in by_mbid.values())
    assert all(len(v) == 1 for v in by_name.values())
    assert all(len(v) == 1 for v in artist_mbid.values())
    with_mbid = sum(1 for v in by_name.values() if next(iter(v)))
    assert 0.45 < with_mbid / len(by_name) < 0.75  # ~60 % of tracks carry a MusicBrainz id
    assert sum(1 for v in artist_mbid.values() if next(iter(v))) / len(artist_mbid) > 0.75


def test_planted_counts_match_the_manifest(tiny: SampleResult, tiny_parsed: Parsed) -> None:
    c = tiny.counts
    assert dict(tiny_parsed.reasons) == {r: c["malformed"][r] for r in REASONS}
    assert all(3 <= c["malformed"][r] <= 5 for r in REASONS)
    dups = sum(1 for i, raw in enumerate(tiny_parsed.valid_raw) if i and raw == tiny_parsed.valid_raw[i - 1])
    assert dups == c["duplicates"] >= 3
    # every exact copy sits right after its original
    assert len(set(tiny_parsed.valid_raw)) == len(tiny_parsed.valid_raw) - dups
    assert c["valid_events"] == len(tiny_parsed.valid) - dups
    assert c["lines_total"] == c["valid_events"] + dups + sum(c["malformed"].values())
    keys = {(f[0], f[1], track_key(f)) for f in tiny_parsed.valid}
    assert len(keys) == c["valid_events"], "two different valid lines share an event key"
    assert c["tracks"] == len({track_key(f) for f in tiny_parsed.valid})
    assert c["users"] == len({f[0] for f in tiny_parsed.valid}) == PRESETS["tiny"].users


def test_each_planted_line_has_exactly_one_problem(tiny_parsed: Parsed) -> None:
    for reason, raw in tiny_parsed.bad:
        fields = raw.decode("latin-1").split("\t")
        if reason == "column_count":
            raw.decode("utf-8")
            assert len(fields) != 6
            continue
        assert len(fields) == 6, raw
        user, ts, _, artist, mbid, title = fields
        assert (not user.strip()) == (reason == "empty_user"), raw
        assert (parse_ts(ts) is None) == (reason == "bad_timestamp"), raw
        assert (not title.strip() and not mbid.strip()) == (reason == "empty_track"), raw
        assert artist.strip()


def test_profiles_file(tiny: SampleResult) -> None:
    data = read_members(tiny.archive)[PROFILES].decode()
    lines = data.rstrip("\n").split("\n")
    assert lines[0] == "#id\tgender\tage\tcountry\tregistered"
    rows = [ln.split("\t") for ln in lines[1:]]
    assert len(rows) == tiny.counts["profiles"] == PRESETS["tiny"].users
    for uid, gender, age, _country, registered in rows:
        assert re.fullmatch(r"user_\d{6}", uid)
        assert gender in ("m", "f", "") and (age == "" or age.isdigit())
        assert registered == "" or datetime.strptime(registered, "%b %d, %Y")
    assert any("" in r[1:] for r in rows)


def test_taste_signal(tiny_parsed: Parsed, truth: dict) -> None:
    clusters = truth["tracks"]
    plays: dict[str, Counter[int]] = defaultdict(Counter)
    total: Counter[int] = Counter()
    per_pair: Counter[tuple[str, str]] = Counter()
    for f in tiny_parsed.valid:
        key = f[4] or _derived(f)
        plays[f[0]][clusters[key]] += 1
        total[clusters[key]] += 1
        per_pair[(f[0], key)] += 1
    all_plays = sum(total.values())
    lifts = []
    for user, counts in plays.items():
        primary = truth["users"][user]["primary"]
        share = counts[primary] / sum(counts.values())
        lifts.append(share / (total[primary] / all_plays))
    assert sorted(lifts)[len(lifts) // 2] > 4, lifts  # median user: primary cluster far above chance
    assert sum(per_pair.values()) / len(per_pair) > 2  # repeat listens are common


def _derived(f: list[str]) -> str:
    from musicrec.ids import derived_track_id

    return derived_track_id(f[3], f[5])


def test_lrclib_dump_schema_and_content(tiny: SampleResult, truth: dict) -> None:
    assert tiny.lrclib_dump is not None
    con = sqlite3.connect(tiny.lrclib_dump)
    try:
        objects = {(r[0], r[1]) for r in con.execute("SELECT type, name FROM sqlite_master")}
        assert {("table", "tracks"), ("table", "lyrics"), ("table", "tracks_fts"),
                ("trigger", "set_tracks_last_lyrics_id")} <= objects
        for idx in ("idx_tracks_name_lower", "idx_tracks_artist_name_lower", "idx_tracks_album_name_lower",
                    "idx_tracks_duration", "idx_tracks_last_lyrics_id"):
            assert ("index", idx) in objects
        fts_sql = con.execute("SELECT sql FROM sqlite_master WHERE name='tracks_fts'").fetchone()[0]
        assert "fts5" in fts_sql and "content='tracks'" in fts_sql
        row = con.execute("SELECT name_lower, artist_name_lower, album_name_lower, duration FROM tracks"
                          " WHERE album_name_lower IS NOT NULL AND duration IS NOT NULL LIMIT 1").fetchone()
        with pytest.raises(sqlite3.IntegrityError):
            con.execute("INSERT INTO tracks (name_lower, artist_name_lower, album_name_lower, duration)"
                        " VALUES (?,?,?,?)", row)
        # FTS is populated, and the last_lyrics_id of every track is its newest lyrics row
        first_word = row[0].split()[0]
        assert con.execute("SELECT count(*) FROM tracks_fts WHERE tracks_fts MATCH ?",
                           (f'name_lower:"{first_word}"',)).fetchone()[0] >= 1
        assert con.execute("SELECT count(*) FROM tracks t WHERE last_lyrics_id IS NOT"
                           " (SELECT max(id) FROM lyrics l WHERE l.track_id = t.id)").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM (SELECT track_id FROM lyrics GROUP BY track_id"
                           " HAVING count(*) > 1)").fetchone()[0] >= 1
        assert con.execute("SELECT count(*) FROM lyrics WHERE instrumental = 1 AND plain_lyrics IS NOT NULL"
                           ).fetchone()[0] == 0
        synced = [r[0] for r in con.execute("SELECT synced_lyrics FROM lyrics WHERE synced_lyrics IS NOT NULL")]
        assert synced and all(LRC.match(ln) for s in synced for ln in s.split("\n"))
        for plain in (r[0] for r in con.execute("SELECT plain_lyrics FROM lyrics WHERE plain_lyrics IS NOT NULL")):
            assert 8 <= len([ln for ln in plain.split("\n") if ln]) <= 40
        tracks = {r[0]: r[1:] for r in con.execute("SELECT id, name, artist_name, name_lower FROM tracks")}
    finally:
        con.close()

    lyrics = truth["lyrics"]
    outcomes = Counter(v["outcome"] for v in lyrics.values())
    covered = (outcomes["found"] + outcomes["instrumental"]) / len(lyrics)
    assert 0.55 < covered < 0.85 and outcomes["instrumental"] >= 1 and outcomes["not_found"] >= 1
    assert set(lyrics) == set(truth["tracks"])  # every track of the archive and the landing files
    # Each answer matches its Last.fm names under a reasonable normalization, and only some verbatim.
    verbatim = 0
    for v in lyrics.values():
        if v["lrclib_id"] is None:
            continue
        name, artist, name_lower = tracks[v["lrclib_id"]]
        assert name_lower == lrclib_lower(name)
        assert _norm(name) == _norm(v["title"]) and _norm(artist) == _norm(v["artist"]), (name, artist, v)
        verbatim += name == v["title"] and artist == v["artist"]
    assert 0 < verbatim < outcomes["found"] + outcomes["instrumental"]
    # Decoys: entries by a sample artist that answer no sample track.
    answer_ids = {v["lrclib_id"] for v in lyrics.values()}
    sample_artists = {_norm(v["artist"]) for v in lyrics.values()}
    assert any(tid not in answer_ids and _norm(a) in sample_artists for tid, (_n, a, _l) in tracks.items())
    assert lrclib_lower("Café Del Mar (Live)!") == "cafe del mar live"
    assert lrclib_lower("Don't Stop / Ünder") == "dont stop under"


def _norm(text: str) -> str:
    text = re.sub(r"\s*\(feat\. [^)]*\)$", "", text)
    text = re.sub(r"\s+feat\. .*$", "", text)
    return lrclib_lower(text.replace("&", " and "))


def test_lyrics_carry_the_cluster(tiny: SampleResult, truth: dict) -> None:
    from musicrec.sample.names import theme_for_cluster

    con = sqlite3.connect(tiny.lrclib_dump)  # type: ignore[arg-type]
    try:
        text = dict(con.execute("SELECT t.id, l.plain_lyrics FROM tracks t JOIN lyrics l ON l.id = t.last_lyrics_id"))
    finally:
        con.close()
    own = other = 0
    for tid, v in truth["lyrics"].items():
        if v["outcome"] != "found":
            continue
        c = truth["tracks"][tid]
        words = re.findall(r"[a-z]+", text[v["lrclib_id"]].lower())
        own += sum(w in set(theme_for_cluster(c)["n"]) for w in words)
        other += sum(w in set(theme_for_cluster((c + 1) % truth["clusters"])["n"]) for w in words)
    assert own > 3 * other


def test_landing_files(tiny: SampleResult) -> None:
    assert tiny.landing_dir is not None
    landing = tiny.counts["landing"]
    assert landing["dates"] == ["2009-05-05", "2009-05-06", "2009-05-07"]
    users = {f"user_{i:06d}" for i in range(1, PRESETS["tiny"].users + 1)}
    keys = set()
    n = 0
    styles = Counter()
    for d in landing["dates"]:
        path = tiny.landing_dir / f"date={d}" / "events-0001.jsonl.gz"
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                n += 1
                assert set(rec) - {"track_id"} == {"user_id", "artist_id", "artist_name", "track_name", "album",
                                                  "duration_s", "ts", "action", "source"}
                assert rec["user_id"] in users and rec["source"] == "app"
                assert rec["action"] in ("listen", "skip", "complete")
                assert rec["artist_name"] and rec["track_name"]
                assert "track_id" not in rec or UUID.match(rec["track_id"])
                assert rec["duration_s"] is None or isinstance(rec["duration_s"], float)
                if isinstance(rec["ts"], int):
                    ms = rec["ts"]
                    styles["epoch"] += 1
                else:
                    assert ISO_MS.match(rec["ts"])
                    ms = int(datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                             .timestamp() * 1000)
                    styles["iso"] += 1
                assert datetime.fromtimestamp(ms / 1000, UTC).date().isoformat() == d
                styles["with_track_id"] += "track_id" in rec
                styles["album"] += rec["album"] is not None
                key = (rec["user_id"], ms, rec.get("track_id") or (rec["artist_name"], rec["track_name"]))
                assert key not in keys
                keys.add(key)
    assert n == landing["events"] > 0
    assert styles["epoch"] and styles["iso"] and 0.3 < styles["with_track_id"] / n < 0.8 and styles["album"]


def test_custom_event_count_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = generate(preset="custom", out_dir=tmp_path / "c", seed=1, n_events=5_000)
    assert res.counts["lines_total"] == 5_000 and res.lrclib_dump is None and res.landing_dir is None
    assert len(Parsed(read_members(res.archive)[EVENTS]).lines) == 5_000
    with pytest.raises(ValueError):
        generate(preset="custom", out_dir=tmp_path / "d")

    out = tmp_path / "cli"
    assert cli_main(["generate", "--preset", "tiny", "--out", str(out), "--seed", "3", "-q"]) == 0
    assert (out / "lrclib-dump.sqlite3").exists() and (out / "landing").is_dir()
    assert "sample tiny (seed 3)" in capsys.readouterr().out
    # a re-run without the optional parts removes their stale files
    assert cli_main(["generate", "--preset", "tiny", "--out", str(out), "--seed", "3", "--no-lrclib",
                     "--no-landing", "--events", "2000", "-q"]) == 0
    assert not (out / "lrclib-dump.sqlite3").exists() and not (out / "landing").exists()
    manifest = json.loads((out / "sample.json").read_text())
    assert manifest["lines_total"] == 2_000 and manifest["lrclib"] is None


def test_manifest_file_hashes(tiny: SampleResult) -> None:
    files = json.loads(tiny.manifest.read_text())["files"]
    for name, meta in files.items():
        data = (tiny.out_dir / name).read_bytes()
        assert meta["bytes"] == len(data) and meta["sha256"] == hashlib.sha256(data).hexdigest()


def test_small_collaborative_filtering_beats_popularity(tmp_path: Path) -> None:
    """The interface promise to the ALS issue: on `small`, ALS ndcg@10 on the held-out last 7 days
    is >= 2x popularity's (seen items filtered from both; measured ~3x at seed 42)."""
    implicit = pytest.importorskip("implicit")
    import numpy as np
    import scipy.sparse as sp

    res = generate(preset="small", out_dir=tmp_path, seed=42, with_lrclib=False, with_landing=False)
    parsed = Parsed(read_members(res.archive)[EVENTS])
    cut = datetime.fromisoformat(res.counts["last_date"]).replace(tzinfo=UTC).timestamp() - 6 * 86400
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    train: list[tuple[int, int]] = []
    test: dict[int, set[int]] = defaultdict(set)
    for f in parsed.valid:
        u, i = users.setdefault(f[0], len(users)), items.setdefault(track_key(f), len(items))
        ts = parse_ts(f[1])
        assert ts is not None
        if ts.timestamp() < cut:
            train.append((u, i))
        else:
            test[u].add(i)
    rows, cols = np.array(train).T
    plays = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(items)))
    plays.sum_duplicates()
    conf = plays.copy()
    conf.data = 1 + 10 * np.log1p(conf.data)
    model = implicit.als.AlternatingLeastSquares(factors=32, iterations=15, regularization=0.1, random_state=1)
    model.fit(conf, show_progress=False)
    popular = np.argsort(-np.asarray(plays.sum(0)).ravel(), kind="stable")

    def ndcg(recs: list[int], relevant: set[int]) -> float:
        dcg = sum(1 / np.log2(k + 2) for k, r in enumerate(recs) if r in relevant)
        return dcg / sum(1 / np.log2(k + 2) for k in range(min(10, len(relevant))))

    als, pop = [], []
    for u, rel in test.items():
        seen = set(plays[u].indices)
        new = rel - seen
        if not new:
            continue
        ids, _ = model.recommend(u, conf[u], N=10, filter_already_liked_items=True)
        als.append(ndcg([int(i) for i in ids], new))
        pop.append(ndcg([int(i) for i in popular[:500] if i not in seen][:10], new))
    assert len(als) > 100
    assert np.mean(als) >= 2 * np.mean(pop), (np.mean(als), np.mean(pop))
