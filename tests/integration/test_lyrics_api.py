"""The API provider against a local LRCLIB-compatible server (127.0.0.1, backed by the sample dump):
same statuses as the dump provider, faults never turn into "not found", the rate limit holds, and a
SIGKILLed run resumes without asking again for what it had settled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime

import pytest

from musicrec.lyrics import enrich, queue
from musicrec.lyrics.normalize import query_words, strip_credits
from tests.integration.test_lyrics_dump import catalog, expected  # noqa: F401
from tests.lrclib_server import FaultPlan, LrclibServer, observed_max_rate

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_chunk(db):
    chunks = queue.plan(db, max_songs=100_000, max_chunks=1)
    assert len(chunks) == 1
    return chunks[0]


def search_key(title: str, artist: str) -> tuple[str, str]:
    return " ".join(query_words(strip_credits(title))), " ".join(query_words(strip_credits(artist)))


def requested(server) -> Counter:
    return Counter((r.params.get("track_name"), r.params.get("artist_name")) for r in server.requests
                   if r.path.endswith("/search"))


def with_album_and_duration(db, truth, n=20):
    """Give some found songs the album and duration app events would carry (exercises /api/get)."""
    picked = [(t, e) for t, e in truth.items() if e["outcome"] == "found" and e.get("album") and e.get("duration")]
    for track_id, entry in picked[:n]:
        db["songs"].update_one({"_id": track_id}, {"$set": {"album": entry["album"], "duration_s": entry["duration"]}})
    return [t for t, _ in picked[:n]]


def test_api_provider_equals_the_dump_provider(catalog, tiny_sample):  # noqa: F811
    db = catalog
    truth = expected(tiny_sample)
    exact = with_album_and_duration(db, truth)
    with LrclibServer(tiny_sample.lrclib_dump) as server:
        result = enrich.run_api_chunk(db, one_chunk(db), server.url, rate_per_s=0, concurrency=8, timeout_s=5)
        gets = [r for r in server.requests if r.path.endswith("/get")]
    assert result["error"] == 0 and result["songs"] == db["songs"].count_documents({})
    assert len(gets) >= len(exact)  # songs with album + duration go through /api/get first
    statuses = Counter()
    for doc in db["songs"].find({}, {"lyrics": 1}):
        want = truth.get(doc["_id"], {"outcome": "not_found"})
        assert doc["lyrics"]["status"] == want["outcome"], (doc["_id"], want)
        if want["outcome"] in ("found", "instrumental"):
            assert doc["lyrics"]["lrclib_id"] == want["lrclib_id"]
        assert doc["lyrics"]["provider"] == "api"
        statuses[doc["lyrics"]["status"]] += 1
    assert statuses["found"] and statuses["instrumental"] and statuses["not_found"]


def test_faults_are_errors_never_not_found_and_a_later_run_settles_them(catalog, tiny_sample):  # noqa: F811
    db = catalog
    truth = expected(tiny_sample)
    faults = FaultPlan(rate_429=0.08, retry_after_s=1, rate_500=0.08, rate_503=0.08, rate_slow=0.08, slow_s=1.0,
                       rate_truncated=0.08, seed=3)
    with LrclibServer(tiny_sample.lrclib_dump, faults=faults) as server:
        first = enrich.run_api_chunk(db, one_chunk(db), server.url, rate_per_s=0, concurrency=8, timeout_s=0.4,
                                     tries=2, backoff_s=0.01)
        fault_kinds = Counter(r.fault for r in server.requests if r.fault)
        assert set(fault_kinds) == {"429", "500", "503", "slow", "truncated"}, fault_kinds
        assert first["faults"] > 0 and first["error"] > 0  # some songs ran out of tries
        for doc in db["songs"].find({}, {"lyrics": 1}):
            want = truth.get(doc["_id"], {"outcome": "not_found"})["outcome"]
            got = doc["lyrics"]
            assert got["status"] in (want, "error"), (doc["_id"], want, got)
            if got["status"] == "error":
                assert got["last_error"] and got["attempts"] == 1 and got["next_attempt_at"]
        error_docs = list(db["songs"].find({"lyrics.status": "error"}, {"title": 1, "artist": 1}))
        errors = {d["_id"] for d in error_docs}
        error_keys = Counter(search_key(d["title"], d["artist"]) for d in error_docs)

        # the next run (errors due again), faults gone: only the errors are asked for again
        server.faults = FaultPlan()
        time.sleep(faults.slow_s + 0.2)  # the server logs a slow request when it answers: let run 1's finish
        server.reset_log()
        db["songs"].update_many({"lyrics.status": "error"}, {"$set": {"lyrics.next_attempt_at": datetime(2000, 1, 1)}})
        chunk = queue.plan(db, max_songs=100_000, max_chunks=1)[0]
        assert chunk.songs == len(errors)
        second = enrich.run_api_chunk(db, chunk, server.url, rate_per_s=0, concurrency=8, timeout_s=5)
        assert second["songs"] == len(errors) and second["error"] == 0
        asked = requested(server)  # one search per song still in error, none for a settled song
        assert asked == error_keys
    check_after = {d["_id"]: d["lyrics"] for d in db["songs"].find({"_id": {"$in": list(errors)}}, {"lyrics": 1})}
    assert all(v["attempts"] == 2 and v["last_error"] is None for v in check_after.values())
    for doc in db["songs"].find({}, {"lyrics": 1}):
        assert doc["lyrics"]["status"] == truth.get(doc["_id"], {"outcome": "not_found"})["outcome"]


def test_the_client_never_exceeds_its_rate_limit_and_honours_retry_after(catalog, tiny_sample):  # noqa: F811
    db = catalog
    chunk = queue.plan(db, max_songs=60, max_chunks=1)[0]
    with LrclibServer(tiny_sample.lrclib_dump, faults=FaultPlan(rate_429=0.05, retry_after_s=1, seed=1)) as server:
        started = time.monotonic()
        result = enrich.run_api_chunk(db, chunk, server.url, rate_per_s=20, concurrency=8, timeout_s=5, tries=4)
        elapsed = time.monotonic() - started
        records = list(server.requests)
    assert result["songs"] == 60 and result["error"] == 0
    assert observed_max_rate(records) <= 21, observed_max_rate(records)  # 20/s, one boundary request of slack
    throttled = [r for r in records if r.fault == "429"]
    assert throttled
    # after a 429 with Retry-After 1 s, no request at all goes out for that second (the whole client waits)
    for hit in throttled:
        assert not [r for r in records if hit.t < r.t < hit.t + 0.95], "a request went out during Retry-After"
    assert elapsed >= len(records) / 20 - 0.5


SETTLED = {"lyrics.status": {"$in": ["found", "not_found", "instrumental", "error"]}}
KILL_SCRIPT = """
import json, logging, sys
from pymongo import MongoClient
from musicrec.lyrics import enrich, queue
logging.basicConfig(level=logging.INFO)
uri, name, base, chunk = sys.argv[1:5]
db = MongoClient(uri)[name]
enrich.run_api_chunk(db, queue.Chunk.from_dict(json.loads(chunk)), base, rate_per_s=40, concurrency=4,
                     timeout_s=5, flush_every=5, flush_s=0.2)
"""


def test_a_sigkilled_run_resumes_and_settles_every_song_once(catalog, tiny_sample, mongo_uri):  # noqa: F811
    db = catalog
    total = db["songs"].count_documents({})
    chunk = one_chunk(db)
    env = dict(os.environ) | {"PYTHONPATH": os.pathsep.join([os.path.join(REPO, "include"), REPO])}
    with LrclibServer(tiny_sample.lrclib_dump) as server:
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, mongo_uri, db.name, server.url,
                                 json.dumps(chunk.as_dict())], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while db["songs"].count_documents(SETTLED) < total // 3:
            assert proc.poll() is None and time.monotonic() < deadline, "the worker ended before the kill"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        settled_before = db["songs"].count_documents(SETTLED)
        unsettled = Counter(search_key(d["title"], d["artist"]) for d in
                            db["songs"].find({"lyrics.status": "pending"}, {"title": 1, "artist": 1}))
        assert 0 < settled_before < total
        server.reset_log()
        # the task's retry: the same chunk bounds, as Airflow would pass them again
        rerun = enrich.run_api_chunk(db, queue.Chunk.from_dict(chunk.as_dict()), server.url, rate_per_s=0,
                                     concurrency=8, timeout_s=5)
        asked = requested(server)
    assert asked == unsettled  # exactly one request per song not yet settled, none for a settled one
    assert rerun["songs"] == total - settled_before
    statuses = check_against_truth_api(db, expected(tiny_sample))
    assert sum(statuses.values()) == total


def check_against_truth_api(db, truth) -> Counter:
    statuses: Counter = Counter()
    for doc in db["songs"].find({}, {"lyrics": 1}):
        want = truth.get(doc["_id"], {"outcome": "not_found"})["outcome"]
        assert doc["lyrics"]["status"] == want and doc["lyrics"]["attempts"] == 1, (doc["_id"], want, doc["lyrics"])
        statuses[want] += 1
    return statuses


def _songs(tiny_sample, n: int) -> list:
    """Songs of the sample dump (found ones, so each needs one /search) plus misses."""
    import sqlite3

    from musicrec.lyrics.match import Song

    con = sqlite3.connect(f"{tiny_sample.lrclib_dump.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, name, artist_name FROM tracks ORDER BY id LIMIT ?", (n,)).fetchall()
    finally:
        con.close()
    return [Song(f"t{i}", name, artist) for i, name, artist in rows]


def test_rate_holds_under_stalls_timeouts_and_429s_on_the_servers_clock(tiny_sample):
    """Slow replies past the client's timeout hold the concurrency slots; 429s pause everyone.
    Counted at the server (every arrival, answered or not): never more than rate_per_s requests in
    any 1-second window and nothing during a Retry-After. (Taking the rate token before the slot
    let tokens pile up behind the stalls and go out together: up to 9/s at rate 5.)"""
    import asyncio

    from musicrec.lyrics.lrclib import LrclibApi

    rate = 5
    faults = FaultPlan(rate_429=0.1, retry_after_s=1, rate_slow=0.5, slow_s=2.5, seed=11)
    songs = _songs(tiny_sample, 30)

    async def go(url):
        async with LrclibApi(url, rate_per_s=rate, concurrency=2, timeout_s=1.0, tries=3, backoff_s=0.05) as api:
            return await asyncio.gather(*(api.lookup(s) for s in songs))

    with LrclibServer(tiny_sample.lrclib_dump, faults=faults) as server:
        outcomes = asyncio.run(go(server.url))
        arrivals = server.arrivals
        records = server.requests
    assert len(outcomes) == len(songs)
    faults_seen = Counter(r.fault for r in records if r.fault)
    assert faults_seen["slow"] and faults_seen["429"], faults_seen
    assert len(arrivals) >= len(songs)
    assert observed_max_rate(arrivals) <= rate, observed_max_rate(arrivals)
    for hit in (r for r in records if r.fault == "429"):
        during = [t for t in arrivals if hit.t < t < hit.t + faults.retry_after_s]
        assert not during, f"{len(during)} request(s) arrived during a Retry-After"


def test_an_oversized_response_body_is_an_error_outcome_not_a_crash():
    import asyncio

    import httpx

    from musicrec.lyrics.lrclib import LrclibApi
    from musicrec.lyrics.match import Song

    sent = []

    async def huge():
        for _ in range(64):  # 64 MiB if read to the end
            sent.append(1)
            yield b"[" + b" " * (1024 * 1024 - 1)

    def handler(request):
        return httpx.Response(200, content=huge(), headers={"Content-Type": "application/json"})

    async def go():
        async with LrclibApi("http://lrclib.invalid/api", rate_per_s=0, transport=httpx.MockTransport(handler),
                             max_body_bytes=2 * 1024 * 1024) as api:
            return await api.lookup(Song("t1", "Title", "Artist"))

    outcome = asyncio.run(go())
    assert outcome.status == "error"
    assert "limit" in outcome.error and "bytes" in outcome.error
    assert len(sent) <= 4  # stopped reading shortly after the limit
