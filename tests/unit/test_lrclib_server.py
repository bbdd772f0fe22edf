"""The local LRCLIB-compatible test server (tests/lrclib_server.py) against the tiny sample's dump."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port
from tests.lrclib_server import (
    FAULTS,
    SEARCH_LIMIT,
    FaultPlan,
    LrclibServer,
    RequestRecord,
    observed_max_rate,
)

RECORD_KEYS = {"id", "trackName", "artistName", "albumName", "duration", "instrumental", "plainLyrics",
               "syncedLyrics"}


@pytest.fixture(scope="module")
def truth(tiny_sample) -> dict[str, dict]:
    return json.loads(Path(tiny_sample.truth).read_text(encoding="utf-8"))["lyrics"]


@pytest.fixture(scope="module")
def server(tiny_sample):
    with LrclibServer(tiny_sample.lrclib_dump) as srv:
        yield srv


@pytest.fixture
def srv(server):
    """The module's server with a clean log and no faults (restored after the test)."""
    server.faults = None
    server.reset_log()
    yield server
    server.faults = None
    server.reset_log()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=5) as c:
        yield c


def _pick(truth: dict[str, dict], outcome: str, *, exact: bool = False) -> dict:
    for entry in truth.values():
        if entry["outcome"] != outcome:
            continue
        if exact and not (entry["album"] and entry["duration"] is not None and entry["variant"] is None):
            continue
        return entry
    pytest.skip(f"the tiny sample has no {outcome} entry{' with album and duration' if exact else ''}")


# ----------------------------------------------------------------------------- API behaviour

def test_url_is_loopback_api_base(srv):
    assert srv.url.startswith("http://127.0.0.1:") and srv.url.endswith("/api")
    assert srv.port > 0


def test_get_finds_a_found_track_by_its_metadata(srv, client, truth):
    entry = _pick(truth, "found", exact=True)
    params = {"track_name": entry["title"], "artist_name": entry["artist"], "album_name": entry["album"],
              "duration": round(entry["duration"])}  # as a client sends it; LRCLIB allows ±2 s
    resp = client.get("/get", params=params)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body.keys() >= RECORD_KEYS
    assert body["id"] == entry["lrclib_id"]
    assert body["trackName"] == entry["lrclib_name"] and body["artistName"] == entry["lrclib_artist"]
    assert body["instrumental"] is False and body["plainLyrics"]
    # normalization: case and punctuation do not matter; the duration window is ±2 s
    loud = dict(params, track_name=entry["title"].upper() + "!", artist_name=f" {entry['artist'].upper()} ")
    assert client.get("/get", params=loud).json()["id"] == entry["lrclib_id"]
    assert client.get("/get", params=dict(params, duration=entry["duration"] + 1.9)).status_code == 200
    assert client.get("/get", params=dict(params, duration=entry["duration"] + 2.6)).status_code == 404
    assert client.get("/get", params=dict(params, album_name="Some Other Album")).status_code == 404
    # a blank album is no condition (as LRCLIB)
    assert client.get("/get", params=dict(params, album_name="")).json()["id"] == entry["lrclib_id"]
    rec = srv.requests[0]
    assert rec.path == "/api/get" and rec.status == 200 and rec.fault is None
    assert rec.params["track_name"] == entry["title"] and rec.params["duration"] == str(params["duration"])


def test_get_not_found_is_404_json(client, truth):
    entry = _pick(truth, "not_found")
    resp = client.get("/get", params={"track_name": entry["title"], "artist_name": entry["artist"],
                                      "album_name": "Whatever", "duration": 200})
    assert resp.status_code == 404
    assert resp.json() == {"code": 404, "name": "TrackNotFound", "message": "Failed to find specified track"}


def test_search_by_title_and_artist_finds_every_answer(client, truth):
    entries = [e for e in truth.values() if e["outcome"] != "not_found"]
    assert entries
    for entry in entries:
        resp = client.get("/search", params={"track_name": entry["title"], "artist_name": entry["artist"]})
        assert resp.status_code == 200
        body = resp.json()
        assert isinstance(body, list) and len(body) <= SEARCH_LIMIT
        assert entry["lrclib_id"] in [r["id"] for r in body], entry
        assert all(r.keys() >= RECORD_KEYS for r in body)


def test_search_q_limit_and_empty(client, truth, tiny_sample):
    entry = _pick(truth, "found")
    body = client.get("/search", params={"q": f"{entry['artist']} {entry['title']}"}).json()
    assert entry["lrclib_id"] in [r["id"] for r in body]
    # the most common word of the dump matches more rows than the limit
    import sqlite3

    con = sqlite3.connect(f"{Path(tiny_sample.lrclib_dump).as_uri()}?mode=ro", uri=True)
    words = Counter(w for row in con.execute("SELECT name_lower, artist_name_lower, album_name_lower FROM tracks")
                    for w in set(" ".join(c or "" for c in row).split()))
    con.close()
    word, n = words.most_common(1)[0]
    assert n > SEARCH_LIMIT
    assert len(client.get("/search", params={"q": word}).json()) == SEARCH_LIMIT
    assert len(client.get("/search", params={"track_name": word}).json()) <= SEARCH_LIMIT
    # no match is an empty list; FTS5 syntax in the input is only words
    assert client.get("/search", params={"q": "zzqxnotaword"}).json() == []
    assert client.get("/search", params={"q": 'NEAR("a" OR *) AND "'}).status_code == 200
    assert client.get("/search", params={"track_name": "\"x'", "artist_name": "a:b"}).status_code == 200


def test_instrumental_record(client, truth):
    entry = _pick(truth, "instrumental")
    body = client.get(f"/get/{entry['lrclib_id']}").json()
    assert body["instrumental"] is True
    assert body["plainLyrics"] is None and body["syncedLyrics"] is None


def test_get_by_id(client, truth):
    entry = _pick(truth, "found")
    resp = client.get(f"/get/{entry['lrclib_id']}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == entry["lrclib_id"] and body["trackName"] == entry["lrclib_name"]
    assert body["artistName"] == entry["lrclib_artist"] and body["albumName"] == entry["album"]
    assert isinstance(body["plainLyrics"], str) and body["plainLyrics"]
    assert client.get("/get/99999999").json()["name"] == "TrackNotFound"
    assert client.get("/get/99999999").status_code == 404
    assert client.get("/get/abc").status_code == 400


@pytest.mark.parametrize(("path", "params"), [
    ("/get", {"artist_name": "a", "album_name": "b", "duration": 200}),
    ("/get", {"track_name": "t", "artist_name": "a", "album_name": "b"}),
    ("/get", {"track_name": "t", "artist_name": "a", "duration": 200}),
    ("/get", {"track_name": "", "artist_name": "a", "album_name": "b", "duration": 200}),
    ("/get", {"track_name": "t", "artist_name": "a", "album_name": "b", "duration": "long"}),
    ("/search", {}),
    ("/search", {"artist_name": "a"}),
    ("/search", {"q": "  "}),
])
def test_bad_requests_are_400_json(client, path, params):
    resp = client.get(path, params=params)
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == 400 and body["name"] == "ValidationError" and body["message"]


def test_unknown_path_is_404(client):
    assert client.get("/nope").status_code == 404


# ----------------------------------------------------------------------------- faults

def test_fault_429_carries_retry_after_and_faults_are_replaceable(srv, client):
    srv.faults = FaultPlan(rate_429=1.0, retry_after_s=2)
    resp = client.get("/get/1")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "2"
    assert resp.json()["code"] == 429
    srv.faults = FaultPlan()
    assert client.get("/get/1").status_code == 200
    assert [(r.status, r.fault) for r in srv.requests] == [(429, "429"), (200, None)]


def test_fault_500_and_503(srv, client):
    srv.faults = FaultPlan(rate_500=1.0)
    assert client.get("/get/1").status_code == 500
    srv.faults = FaultPlan(rate_503=1.0)
    resp = client.get("/get/1")
    assert resp.status_code == 503 and resp.headers["content-type"].startswith("text/html")


def test_fault_truncated_json_is_unparseable(srv, client):
    whole = client.get("/search", params={"q": "the"}).content
    srv.faults = FaultPlan(rate_truncated=1.0)
    for path, params in (("/search", {"q": "the"}), ("/get/99999999", {}), ("/search", {"q": "zzqxnotaword"})):
        resp = client.get(path, params=params)
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        with pytest.raises(ValueError):
            json.loads(resp.content)
    srv.faults = FaultPlan(rate_truncated=1.0)
    part = client.get("/search", params={"q": "the"}).content
    assert whole.startswith(part) and len(part) == len(whole) // 2
    assert {r.fault for r in srv.requests} == {None, "truncated"}


def test_fault_slow_waits_and_client_timeouts_leave_no_traceback(srv, client, capfd):
    srv.faults = FaultPlan(rate_slow=1.0, slow_s=0.3)
    started = time.monotonic()
    resp = client.get("/get/1")
    assert time.monotonic() - started >= 0.3
    assert resp.status_code == 200 and resp.json()["id"] == 1
    with httpx.Client(base_url=srv.url, timeout=0.05) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.get("/get/1")
    time.sleep(0.5)  # the server answers into the closed connection
    srv.faults = None
    assert client.get("/get/1").status_code == 200
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "GET /api" not in out + err  # no request logging either
    assert [r.fault for r in srv.requests] == ["slow", "slow", None]


def test_fault_draws_are_seeded_and_thread_safe(srv):
    plan = FaultPlan(rate_429=0.2, rate_500=0.2, rate_503=0.1, rate_truncated=0.1, retry_after_s=0, seed=11)
    rnd = random.Random(plan.seed)
    expected = Counter(plan.draw(rnd) for _ in range(80))
    assert set(expected) == {*FAULTS, None} - {"slow"}

    def sequential() -> list[str | None]:
        srv.faults = plan
        srv.reset_log()
        with httpx.Client(base_url=srv.url, timeout=5) as c:
            for _ in range(20):
                c.get("/get/1")
        return [r.fault for r in srv.requests]

    first = sequential()
    assert sequential() == first  # the same plan again = the same faults in the same order

    srv.faults = plan
    srv.reset_log()
    with httpx.Client(base_url=srv.url, timeout=5) as c, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: c.get("/get/1").status_code, range(80)))
    records = srv.requests
    assert len(records) == 80
    assert Counter(r.fault for r in records) == expected  # one draw per request, none lost or doubled
    assert Counter(statuses)[429] == expected["429"]


def test_fault_plan_validates():
    with pytest.raises(ValueError):
        FaultPlan(rate_429=1.5)
    with pytest.raises(ValueError):
        FaultPlan(rate_429=0.6, rate_500=0.6)


def test_server_rate_limit(tiny_sample):
    with LrclibServer(tiny_sample.lrclib_dump, max_rate_per_s=5) as srv, \
            httpx.Client(base_url=srv.url, timeout=5) as c:
        resps = [c.get("/get/1") for _ in range(12)]
    statuses = [r.status_code for r in resps]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    limited = [r for r in resps if r.status_code == 429]
    assert all(r.headers["Retry-After"] == "1" for r in limited)
    records = srv.requests
    assert {r.fault for r in records if r.status == 429} == {"rate_limited"}
    assert observed_max_rate([r for r in records if r.status == 200]) <= 5


# ----------------------------------------------------------------------------- helpers

def test_observed_max_rate_on_synthetic_records():
    def recs(times):
        return [RequestRecord(t, "/api/get", {}, 200, None) for t in times]

    assert observed_max_rate([]) == 0.0
    assert observed_max_rate(recs([10.0])) == 1.0
    assert observed_max_rate(recs([0.0, 0.5, 1.0, 1.5, 2.0])) == 2.0  # exactly 2/s: the window is half-open
    assert observed_max_rate(recs([0.0, 0.01, 0.02, 0.03, 0.04, 3.0])) == 5.0  # a burst
    assert observed_max_rate(recs([5.0, 0.0, 0.4, 0.8, 4.9])) == 3.0  # unsorted input
    assert observed_max_rate(recs([0.0, 0.5, 1.0, 1.5]), window_s=2.0) == 2.0
    assert observed_max_rate([0.0, 0.1, 0.2]) == 3.0  # bare timestamps
    with pytest.raises(ValueError):
        observed_max_rate([], window_s=0)


def test_start_refuses_a_missing_dump(tmp_path):
    with pytest.raises(FileNotFoundError):
        LrclibServer(tmp_path / "none.sqlite3").start()


def test_main_serves_until_interrupted(tiny_sample):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.lrclib_server", str(tiny_sample.lrclib_dump),
                             "--port", str(port), "--rate-429", "0"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/api/get/1", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert resp.status_code == 200 and resp.json()["id"] == 1
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)  # generous for a loaded machine; it takes < 1 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/api" in out and "Traceback" not in out


def test_main_stops_cleanly_on_a_signal_at_any_moment_after_it_listens(tiny_sample):
    """SIGINT/SIGTERM as soon as the port accepts a connection (the server may still be starting):
    the process exits 0 with no traceback. The old main slept 3600 s waiting for a
    KeyboardInterrupt, which could fire inside start() or print() (a traceback), or be swallowed
    (the process then never stopped): about half of these runs failed under load."""
    import socket

    for i, sig in enumerate([signal.SIGINT, signal.SIGTERM] * 3):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "tests.lrclib_server", str(tiny_sample.lrclib_dump),
                                 "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            proc.send_signal(sig)
            out, _ = proc.communicate(timeout=60)  # generous: a loaded machine; it takes < 1 s
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0 and "Traceback" not in out, (i, sig, out)
