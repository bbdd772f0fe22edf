"""The serving API (design §8) against the embedded engines: an ALS model trained and published on the
``small`` lake (as ``test_als_publish`` does), a small lyrics collection from a deterministic fake
encoder, FastAPI's TestClient in-process. Every route's auth, validation, 404, cold-user fallback,
answer shapes, and the events replay no-op."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pymongo import MongoClient
from qdrant_client import QdrantClient
from upath import UPath

from musicrec.als import model, publish
from musicrec.als.params import ALIAS, AlsParams
from musicrec.catalog import sync
from musicrec.embeddings import embed, store
from musicrec.embeddings.encoder import Encoded
from musicrec.serve import events, keys
from musicrec.serve.app import create_app
from musicrec.serve.deps import Services, Settings
from musicrec.vectors import milvus as mv
from tests.chromium import headless_chromium
from tests.integration.test_als_publish import WEEK2, clean_milvus, no_lake_reads

pytestmark = pytest.mark.integration

PARAMS = AlsParams(factors=16, iterations=8)
DIM = 16
LYRIC_SONGS = 8
MODEL_ID = "fake-encoder"


class FakeEncoder:
    """Hashed bag of words: dense (L2-normalized) + sparse weights; the same text always maps the same."""

    dim, has_sparse = DIM, True

    def encode(self, texts, batch_size=1):
        dense, sparse = [], []
        for text in texts:
            vec = np.zeros(DIM, np.float32)
            weights: dict[int, float] = {}
            for tok in re.findall(r"\w+", text.lower()):
                h = zlib.crc32(tok.encode())
                vec[h % DIM] += 1.0
                weights[h % 5000 + 1] = weights.get(h % 5000 + 1, 0.0) + 1.0
            dense.append(vec / (np.linalg.norm(vec) or 1.0))
            sparse.append(weights)
        return Encoded(np.asarray(dense, np.float32), sparse)


def build_lyrics(db, milvus, songs: list[dict]) -> str:
    enc = FakeEncoder()
    rows = []
    for i, s in enumerate(songs):
        plain = f"lyric number {i} about {'rain' if i % 2 else 'summer'} and {s['title']}"
        rows.append({"track_id": s["_id"], "title": s["title"], "artist": s["artist"],
                     "text": store.compose_text(s["title"], s["artist"], plain),
                     "lyrics_sha256": hashlib.sha256(plain.encode()).hexdigest(), "model_id": MODEL_ID})
    out = enc.encode([r["text"] for r in rows])
    table = store.delta_table(rows, out.dense, out.sparse, DIM)
    name = store.collection_name("fake")
    store.upsert_milvus(milvus, name, table)
    embed.build_indexes(milvus, name)
    mv.swap_alias(milvus, store.ALIAS, name)
    db["models"].insert_one({"_id": store.model_doc_id("fake"), "kind": store.MODEL_KIND, "status": "active",
                             "model_id": MODEL_ID, "collection": name})
    return name


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """A real uvicorn server over ``app`` on a free 127.0.0.1 port, in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    from tests.conftest import free_port

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def world(small_lake, mongo_uri, milvus_uri, tmp_path_factory):
    """A published ALS model + a lyrics collection + keys; yields what the tests need."""
    src, docs = small_lake
    tmp = tmp_path_factory.mktemp("serve")
    lake = tmp / "lake"
    shutil.copytree(src, lake)
    root = UPath(lake)
    client = MongoClient(mongo_uri)
    client.drop_database("t_serve")
    db = client["t_serve"]
    db["lake_partitions"].insert_many([dict(d) for d in docs])
    sync.sync_catalog(root, db, WEEK2)
    milvus = mv.connect(milvus_uri)
    clean_milvus(milvus)
    qdrant = QdrantClient(path=str(tmp / "qdrant"))
    summary = model.train(root, db, WEEK2, PARAMS, backend="auto", run_id="test")
    publish.gate(db, summary["version"])
    publish.publish(db, root, summary, milvus, qdrant, index=mv.IndexSpec("HNSW", "IP"))
    qdrant.close()
    version = summary["version"]
    warm = db["users"].find_one({f"latent_vectors.{version}": {"$exists": True}}, sort=[("_id", 1)])["_id"]
    db["users"].insert_one({"_id": "cold_user"})  # in the catalog, not in the model
    songs = list(db["songs"].find({}, {"title": 1, "artist": 1}).sort("plays_total", -1).limit(LYRIC_SONGS))
    build_lyrics(db, milvus, songs)
    settings = Settings(mongo_uri=mongo_uri, mongo_db="t_serve", milvus_uri=milvus_uri)
    services = Services(settings, encoder_factory=lambda _db: FakeEncoder())
    app = create_app(settings, services)
    key_read, _ = keys.create(db, "reader", "read")
    key_events, _ = keys.create(db, "ingest", "events")
    key_all, _ = keys.create(db, "both", "read,events")
    with TestClient(app) as http:
        yield {"http": http, "db": db, "milvus": milvus, "version": version, "warm": warm, "songs": songs,
               "read": {"Authorization": f"Bearer {key_read}"}, "events": {"Authorization": f"Bearer {key_events}"},
               "all": {"Authorization": f"Bearer {key_all}"}, "app": app, "root": root}
    client.drop_database("t_serve")
    client.close()
    clean_milvus(milvus)


def assert_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) >= {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body
    return body


def assert_list(body: dict, version: str | None, fallback: str | None = None, k: int | None = None) -> None:
    assert set(body) == {"model_version", "items", "fallback"}, body
    assert body["model_version"] == version and body["fallback"] == fallback
    for item in body["items"]:
        assert set(item) == {"track_id", "title", "artist", "score"}
        assert isinstance(item["track_id"], str) and isinstance(item["score"], float)
    if k is not None:
        assert len(body["items"]) == k


def read_routes(w) -> list[str]:
    song = w["songs"][0]["_id"]
    return [f"/v1/users/{w['warm']}/recommendations", f"/v1/users/{w['warm']}/next?track_id={song}",
            f"/v1/tracks/{song}", f"/v1/tracks/{song}/similar", "/v1/search?q=rain", "/v1/users"]


def test_every_v1_route_needs_a_key_with_its_scope(world):
    http = world["http"]
    for path in read_routes(world):
        r = assert_error(http.get(path), 401, "unauthorized")
        assert "Bearer" in http.get(path).headers["www-authenticate"]
        assert_error(http.get(path, headers={"Authorization": "Bearer mrk_wrong"}), 401, "unauthorized")
        assert_error(http.get(path, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
        assert_error(http.get(path, headers=world["events"]), 403, "forbidden")
        assert http.get(path, headers=world["read"]).status_code == 200, path
        assert r["error"]["message"]
    body = {"events": []}
    assert_error(http.post("/v1/events", json=body), 401, "unauthorized")
    assert_error(http.post("/v1/events", json=body, headers=world["read"]), 403, "forbidden")
    assert http.post("/v1/events", json=body, headers=world["events"]).status_code == 202
    assert http.post("/v1/events", json=body, headers=world["all"]).status_code == 202


def test_revoked_key_is_refused_after_the_cache(world):
    db, http, app = world["db"], world["http"], world["app"]
    key, doc = keys.create(db, "temp", "read")
    headers = {"Authorization": f"Bearer {key}"}
    assert http.get("/v1/users?limit=1", headers=headers).status_code == 200
    keys.revoke(db, "temp")
    app.state.keys.clear()  # the cache (10 s by default) is what delays a revoke
    assert_error(http.get("/v1/users?limit=1", headers=headers), 401, "unauthorized")
    listed = {d["_id"]: d for d in keys.list_keys(db)}
    assert listed[doc["_id"]]["revoked_at"] is not None and "sha256" not in listed[doc["_id"]]
    stored = db[keys.COLLECTION].find_one({"_id": doc["_id"]})
    assert stored["sha256"] == keys.hash_key(key) and key not in str(stored)


def test_home_feed_shape_excludes_played_tracks(world):
    """Played tracks (stored by the publish with the user's vector) are excluded, the lake never read."""
    http, version, user, db = world["http"], world["version"], world["warm"], world["db"]
    played = set(db["users"].find_one({"_id": user})["played_tracks"][version])
    with no_lake_reads():
        body = http.get(f"/v1/users/{user}/recommendations", headers=world["read"]).json()
        assert_list(body, version, None, k=10)
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert all(i["title"] for i in body["items"])
        assert played and not played & {i["track_id"] for i in body["items"]}
        # the exclusion is real: the unfiltered ranking holds played tracks among its first ones
        from musicrec import recommend

        raw = recommend.home(user, 10 + len(played), db=db, milvus=world["milvus"], exclude=[])
        assert played & {r.track_id for r in raw}
        assert [i["track_id"] for i in body["items"]] == [r.track_id for r in raw if r.track_id not in played][:10]
        nxt = http.get(f"/v1/users/{user}/next?track_id={sorted(played)[0]}&k=10", headers=world["read"]).json()
        assert_list(nxt, version, None, k=10)
        assert not played & {i["track_id"] for i in nxt["items"]}
        assert len(http.get(f"/v1/users/{user}/recommendations?k=3", headers=world["read"]).json()["items"]) == 3


def test_cold_user_gets_popularity_and_unknown_user_404(world):
    http, db = world["http"], world["db"]
    body = http.get("/v1/users/cold_user/recommendations?k=5", headers=world["read"]).json()
    assert_list(body, world["version"], "popularity", k=5)
    top = [d["_id"] for d in db["songs"].find({}, {"_id": 1}).sort([("plays_total", -1), ("_id", 1)]).limit(5)]
    assert [i["track_id"] for i in body["items"]] == top
    nxt = http.get(f"/v1/users/cold_user/next?track_id={top[0]}&k=5", headers=world["read"]).json()
    assert_list(nxt, world["version"], "popularity", k=5)
    assert top[0] not in {i["track_id"] for i in nxt["items"]}
    for path in ("/v1/users/nobody/recommendations", f"/v1/users/nobody/next?track_id={top[0]}"):
        assert_error(http.get(path, headers=world["read"]), 404, "user_not_found")


def test_k_and_params_are_validated(world):
    http, user, song = world["http"], world["warm"], world["songs"][0]["_id"]
    for path in (f"/v1/users/{user}/recommendations?k=101", f"/v1/users/{user}/recommendations?k=0",
                 f"/v1/users/{user}/recommendations?k=ten", f"/v1/users/{user}/next?track_id={song}&k=101",
                 f"/v1/users/{user}/next", f"/v1/tracks/{song}/similar?k=101", "/v1/search?q=rain&k=101",
                 "/v1/search", "/v1/search?q=rain&mode=fuzzy", "/v1/search?q=%20"):
        assert_error(http.get(path, headers=world["read"]), 422, "invalid_request")
    assert http.get(f"/v1/users/{user}/recommendations?k=100", headers=world["read"]).status_code == 200
    # no key beats a bad parameter: auth is checked first
    assert_error(http.get(f"/v1/users/{user}/recommendations?k=101"), 401)
    assert_error(http.get("/v1/nowhere", headers=world["read"]), 404, "not_found")


def test_next_songs(world):
    http, user, db = world["http"], world["warm"], world["db"]
    current = world["songs"][0]["_id"]
    body = http.get(f"/v1/users/{user}/next?track_id={current}&k=7", headers=world["read"]).json()
    assert_list(body, world["version"], None, k=7)
    assert current not in {i["track_id"] for i in body["items"]}
    assert_error(http.get(f"/v1/users/{user}/next?track_id=no-such-track", headers=world["read"]), 404,
                 "track_not_found")
    # a song the catalog has but the model does not: the popularity list, without the song
    db["songs"].insert_one({"_id": "new-song", "title": "New", "artist": "Someone", "plays_total": 0})
    body = http.get(f"/v1/users/{user}/next?track_id=new-song&k=3", headers=world["read"]).json()
    assert_list(body, world["version"], "popularity", k=3)


def test_track_and_similar(world):
    http, song = world["http"], world["songs"][0]
    body = http.get(f"/v1/tracks/{song['_id']}", headers=world["read"]).json()
    doc = world["db"]["songs"].find_one({"_id": song["_id"]})
    assert body == {"track_id": song["_id"], "title": doc["title"], "artist": doc["artist"],
                    "lyrics_status": (doc.get("lyrics") or {}).get("status"), "plays": doc["plays_total"]}
    assert_error(http.get("/v1/tracks/no-such-track", headers=world["read"]), 404, "track_not_found")
    sim = http.get(f"/v1/tracks/{song['_id']}/similar?k=5", headers=world["read"]).json()
    assert_list(sim, world["version"], None, k=5)
    assert song["_id"] not in {i["track_id"] for i in sim["items"]}
    assert_error(http.get("/v1/tracks/no-such-track/similar", headers=world["read"]), 404, "track_not_found")


def test_search_modes(world):
    http = world["http"]
    lyric_ids = {s["_id"] for s in world["songs"]}
    for mode in ("hybrid", "dense", "sparse", "bm25"):
        body = http.get(f"/v1/search?q=rain&k=3&mode={mode}", headers=world["read"]).json()
        assert_list(body, store.model_doc_id("fake"), None)
        assert 1 <= len(body["items"]) <= 3 and {i["track_id"] for i in body["items"]} <= lyric_ids, (mode, body)
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True) and min(scores) >= 0, (mode, scores)  # higher is better
    # a title word finds that song first by BM25
    title = world["songs"][3]["title"]
    body = http.get("/v1/search", params={"q": title, "mode": "bm25", "k": 3}, headers=world["read"]).json()
    assert body["items"][0]["track_id"] == world["songs"][3]["_id"]


def test_events_accept_reject_and_replay_is_a_noop(world):
    http, db = world["http"], world["db"]
    ts = "2009-05-04T10:00:00Z"
    batch = {"events": [
        {"user_id": "u_ev", "track_id": "t1", "ts": ts, "action": "complete"},
        {"user_id": "u_ev", "artist": "Some Artist", "title": "Some Song", "ts": 1241431200000, "action": "skip"},
        {"user_id": "", "track_id": "t1", "ts": ts},
        {"user_id": "u_ev", "ts": ts},
        {"user_id": "u_ev", "track_id": "t1", "ts": "not a time"},
        {"user_id": "u_ev", "track_id": "t1", "ts": ts, "action": "dance"},
        {"user_id": "u_ev", "track_id": "t1",
         "ts": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
        "not an object",
        {"user_id": "u\tev", "track_id": "t1", "ts": ts},
    ]}
    r = http.post("/v1/events", json=batch, headers=world["events"])
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2, "rejected": [
        {"index": 2, "reason": "empty_user"}, {"index": 3, "reason": "empty_track"},
        {"index": 4, "reason": "bad_timestamp"}, {"index": 5, "reason": "bad_action"},
        {"index": 6, "reason": "future_timestamp"}, {"index": 7, "reason": "not_an_object"},
        {"index": 8, "reason": "bad_user_id"}]}
    docs = {d["action"]: d for d in db[events.COLLECTION].find({"user_id": "u_ev"})}
    assert set(docs) == {"complete", "skip"}
    first = docs["complete"]
    assert first["_id"] == events.event_id("u_ev", datetime(2009, 5, 4, 10, tzinfo=UTC), "t1", "complete")
    assert first["ts"] == datetime(2009, 5, 4, 10) and first["track_id"] == "t1" and first["received_at"]
    from musicrec.ids import derived_track_id

    assert docs["skip"]["track_id"] == derived_track_id("Some Artist", "Some Song")
    assert docs["skip"]["artist"] == "Some Artist" and docs["skip"]["title"] == "Some Song"
    # the replay: accepted again, nothing new stored, the first received_at kept
    again = http.post("/v1/events", json=batch, headers=world["events"]).json()
    assert again["accepted"] == 2
    assert db[events.COLLECTION].count_documents({"user_id": "u_ev"}) == 2
    assert db[events.COLLECTION].find_one({"_id": first["_id"]})["received_at"] == first["received_at"]
    # the same event with an offset timestamp is the same event
    same = {"events": [{"user_id": "u_ev", "track_id": "t1", "ts": "2009-05-04T12:00:00+02:00",
                        "action": "complete"}]}
    assert http.post("/v1/events", json=same, headers=world["events"]).json() == {"accepted": 1, "rejected": []}
    assert db[events.COLLECTION].count_documents({"user_id": "u_ev"}) == 2


def test_events_body_errors(world):
    http, h = world["http"], world["events"]
    assert_error(http.post("/v1/events", content=b"{not json", headers=h), 422, "invalid_request")
    assert_error(http.post("/v1/events", json=[1, 2], headers=h), 422, "invalid_request")
    assert_error(http.post("/v1/events", json={"events": {}}, headers=h), 422, "invalid_request")
    assert_error(http.post("/v1/events", json={"events": [{}] * 1001}, headers=h), 422, "invalid_request")


def test_operations_routes_page_and_openapi(world):
    http = world["http"]
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"mongo": "ok", "milvus": "ok",
                                                                   "model": world["version"]}
    http.get(f"/v1/users/{world['warm']}/recommendations", headers=world["read"])
    text = http.get("/metrics").text
    assert 'musicrec_serve_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"}' \
        in text
    assert 'musicrec_serve_request_seconds_bucket{le="0.05",method="GET",' \
           'route="/v1/users/{user_id}/recommendations"}' in text
    page = http.get("/")
    assert page.status_code == 200 and "<script src=\"/static/app.js\">" in page.text
    assert "http" not in re.sub(r"<a href=\"/[^\"]*\"", "", page.text).split("<body>")[1].split("//")[0]
    js = http.get("/static/app.js").text
    assert "sessionStorage" in js and "https://" not in js and "http://" not in js
    spec = http.get("/openapi.json").json()
    assert {"/v1/users/{user_id}/recommendations", "/v1/users/{user_id}/next", "/v1/tracks/{track_id}",
            "/v1/tracks/{track_id}/similar", "/v1/search", "/v1/events"} <= set(spec["paths"])
    assert http.get("/docs").status_code == 200


def test_readyz_without_a_model_and_cors(world, mongo_uri, milvus_uri):
    settings = Settings(mongo_uri=mongo_uri, mongo_db="t_serve_empty", milvus_uri=milvus_uri,
                        cors_origins=("https://app.example",))
    milvus = world["milvus"]
    target = mv.alias_target(milvus, ALIAS)
    milvus.drop_alias(ALIAS)
    try:
        with TestClient(create_app(settings)) as http:
            r = http.get("/readyz")
            assert_error(r, 503, "not_ready")
            assert r.json()["checks"]["model"] is None
            pre = http.options("/v1/search", headers={"Origin": "https://app.example",
                                                      "Access-Control-Request-Method": "GET",
                                                      "Access-Control-Request-Headers": "authorization"})
            assert pre.headers["access-control-allow-origin"] == "https://app.example"
            other = http.options("/v1/search", headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "GET"})
            assert "access-control-allow-origin" not in other.headers
    finally:
        mv.swap_alias(milvus, ALIAS, target)
    # closed by default: no CORS header at all
    r = world["http"].get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers


def test_a_key_never_reaches_the_log(world, caplog):
    key, _ = keys.create(world["db"], "logcheck", "read")
    with caplog.at_level("DEBUG"):
        world["http"].get(f"/v1/users/{world['warm']}/recommendations", headers={"Authorization": f"Bearer {key}"})
        world["http"].get("/v1/users/nobody/recommendations", headers={"Authorization": f"Bearer {key}x"})
    # (at DEBUG pymongo logs the filter with the key's sha256: not a key, and not reversible)
    assert caplog.text and key not in caplog.text and key[4:] not in caplog.text


def test_keys_cli_create_list_revoke(mongo_db, mongo_uri, monkeypatch, capsys):
    from musicrec.serve.__main__ import main

    monkeypatch.setenv("MUSICREC_SERVE_MONGO_URI", mongo_uri)
    monkeypatch.setenv("MUSICREC_SERVE_MONGO_DB", mongo_db.name)
    assert main(["keys", "create", "--name", "web", "--scopes", "read,events"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("mrk_") and len(key) > 40 and key not in out.err
    assert keys.lookup(mongo_db, key)["scopes"] == ["events", "read"]
    assert main(["keys", "create", "--name", "web"]) == 2  # an active key has that name
    assert main(["keys", "create", "--name", "x", "--scopes", "admin"]) == 2
    capsys.readouterr()
    assert main(["keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in listed] == ["web"] and "sha256" not in listed[0]
    assert key not in json.dumps(listed)
    assert main(["keys", "revoke", "web"]) == 0 and keys.lookup(mongo_db, key) is None
    assert main(["keys", "revoke", "web"]) == 2
    assert main(["keys", "list"]) == 0 and "web" in capsys.readouterr().out


def test_python_m_musicrec_serve_answers_over_http(world, mongo_uri, milvus_uri):
    """The real entry point: uvicorn with the app factory, settings from the workers' variables."""
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import free_port

    port = free_port()
    env = dict(os.environ) | {"AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "t_serve",
                              "AIRFLOW_CONN_MILVUS_DEFAULT": json.dumps({"conn_type": "milvus",
                                                                         "extra": {"uri": milvus_uri}}),
                              "AIRFLOW_VAR_MUSICREC_LAKE_ROOT": world["root"].as_uri()}
    proc = subprocess.Popen([sys.executable, "-m", "musicrec.serve", "--port", str(port), "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)
        assert httpx.get(base + "/readyz").json()["checks"]["model"] == world["version"]
        r = httpx.get(f"{base}/v1/users/{world['warm']}/recommendations?k=3", headers=world["read"])
        assert r.status_code == 200 and r.json()["model_version"] == world["version"] and len(r.json()["items"]) == 3
        assert httpx.get(f"{base}/v1/users/{world['warm']}/recommendations").status_code == 401
        assert "text/html" in httpx.get(base + "/").headers["content-type"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    key = world["read"]["Authorization"].split()[1]
    assert "GET /v1/users/" in out and key not in out  # uvicorn's access log: paths, never the key


# ----------------------------------------------------------------------------- the page, in a browser

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "data" / "screenshots"


def test_the_page_in_a_real_browser(world):
    """Headless Chromium on the page at ``/`` over a real uvicorn server: the key entered once (kept
    for the tab), a user's home feed, a lyrics search, a click on a song → the next songs with the
    model version and scores; the page and ``/docs`` fetch nothing from another origin."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings = world["app"].state.services.settings
    app = create_app(settings, Services(settings, encoder_factory=lambda _db: FakeEncoder()))
    key = world["read"]["Authorization"].split()[1]
    version, user = world["version"], world["warm"]
    d = headless_chromium("1400,1000", page_load_timeout_s=60)
    try:
        with running_server(app) as base:
            def wait(cond, what):
                try:
                    return WebDriverWait(d, 60, poll_frequency=0.2).until(cond)
                except Exception:
                    SHOTS.mkdir(parents=True, exist_ok=True)
                    d.save_screenshot(str(SHOTS / "serve-page-timeout.png"))
                    raise AssertionError(f"browser: timed out waiting for {what}; error line: "
                                         f"{d.find_element(By.ID, 'error').text!r}") from None

            def rows(box):
                return d.find_elements(By.CSS_SELECTOR, f"#{box} tr.song")

            def foreign(page_base):
                names = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
                return [n for n in names if not n.startswith(page_base + "/")]

            d.get(base + "/")
            assert d.find_element(By.ID, "key-state").text == "no key"
            d.find_element(By.ID, "key").send_keys(key)
            d.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
            wait(lambda _: d.find_element(By.ID, "key-state").text == "key set for this tab", "the key")
            assert d.find_element(By.ID, "key").get_attribute("value") == ""  # not left in the form
            # the user picker fills from /v1/users
            wait(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#users option")) > 1, "the user list")

            # pick a user: the home feed, with the model version and the API's scores
            d.find_element(By.ID, "user").send_keys(user)
            d.find_element(By.CSS_SELECTOR, "#user-form button[type=submit]").click()
            wait(lambda _: len(rows("home")) == 10, "the home feed")
            api = world["http"].get(f"/v1/users/{user}/recommendations?k=10", headers=world["read"]).json()
            shown = [(r.get_attribute("data-track-id"), r.find_element(By.CSS_SELECTOR, "td.score").text)
                     for r in rows("home")]
            assert shown == [(i["track_id"], f"{i['score']:.4f}") for i in api["items"]]
            assert f"model {version}" in d.find_element(By.CSS_SELECTOR, "#home p.muted").text

            # lyrics search
            d.find_element(By.ID, "q").send_keys("rain")
            d.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
            wait(lambda _: rows("search"), "search results")
            lyric_ids = {s["_id"] for s in world["songs"]}
            assert {r.get_attribute("data-track-id") for r in rows("search")} <= lyric_ids

            # click a song of the home feed: the next songs after it, with the model version and scores
            first = rows("home")[0]
            clicked, title = first.get_attribute("data-track-id"), first.find_elements(By.TAG_NAME, "td")[1].text
            first.click()
            wait(lambda _: len(rows("next")) == 10, "the next songs")
            assert title in d.find_element(By.ID, "next-title").text and user in d.find_element(By.ID, "next-title").text
            assert f"model {version}" in d.find_element(By.CSS_SELECTOR, "#next p.muted").text
            nxt = world["http"].get(f"/v1/users/{user}/next?track_id={clicked}&k=10", headers=world["read"]).json()
            assert [r.get_attribute("data-track-id") for r in rows("next")] == [i["track_id"] for i in nxt["items"]]
            scores = [float(r.find_element(By.CSS_SELECTOR, "td.score").text) for r in rows("next")]
            assert scores == sorted(scores, reverse=True) and clicked not in {i["track_id"] for i in nxt["items"]}
            assert d.find_element(By.ID, "error").text == ""
            SHOTS.mkdir(parents=True, exist_ok=True)
            d.save_screenshot(str(SHOTS / "serve-page.png"))
            assert (SHOTS / "serve-page.png").stat().st_size > 10_000
            assert foreign(base) == []

            # the key stays for the tab: a reload needs no new key; a cold user gets the marked fallback
            d.refresh()
            wait(lambda _: d.find_element(By.ID, "key-state").text == "key set for this tab", "the kept key")
            d.find_element(By.ID, "user").send_keys("cold_user")
            d.find_element(By.CSS_SELECTOR, "#user-form button[type=submit]").click()
            wait(lambda _: rows("home"), "the cold user's feed")
            assert "fallback: popularity" in d.find_element(By.CSS_SELECTOR, "#home p.muted").text
            # an unknown user: the API's error shows on the page
            d.find_element(By.ID, "user").clear()
            d.find_element(By.ID, "user").send_keys("nobody")
            d.find_element(By.CSS_SELECTOR, "#user-form button[type=submit]").click()
            wait(lambda _: "user_not_found" in d.find_element(By.ID, "error").text, "the 404 on the page")

            # the OpenAPI page is self-contained: every route listed, nothing fetched from elsewhere
            d.get(base + "/docs")
            wait(ec.presence_of_element_located((By.TAG_NAME, "h1")), "the OpenAPI page")
            text = d.find_element(By.TAG_NAME, "body").text
            assert "/v1/users/{user_id}/recommendations" in text and "/v1/events" in text
            assert foreign(base) == [] and not d.find_elements(By.CSS_SELECTOR, "script[src]")
    finally:
        d.quit()


def test_docs_page_fetches_nothing_from_a_cdn(world):
    http = world["http"]
    page = http.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    text = page.text
    assert "/v1/users/{user_id}/next" in text and 'href="/openapi.json"' in text
    assert not re.search(r"<script[^>]*\bsrc=", text) and not re.search(r"<link[^>]*\bhref=", text)
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", text), "an absolute URL in /docs"
    assert "cdn" not in text.lower() and "jsdelivr" not in text.lower() and "unpkg" not in text.lower()
    assert http.get("/redoc").status_code == 404  # FastAPI's ReDoc page (from a CDN) is off


def test_bench_serve_runs_quick(world, mongo_uri, milvus_uri, tmp_path):
    """``bench/serve.py --quick`` over this module's stores: it starts its server, loads every route
    at each concurrency, times the library, soaks, and writes its figures (so it cannot rot)."""
    import subprocess
    import sys

    out = tmp_path / "serve.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "serve.py"), "--quick", "--requests", "12",
                           "--concurrency", "1", "4", "--soak-s", "2", "--soak-c", "4", "--mongo-uri", mongo_uri,
                           "--mongo-db", "t_serve", "--milvus-uri", milvus_uri, "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["model"] == world["version"]
    for route in ("home", "next", "similar", "track", "search"):
        for c in ("1", "4"):
            api, lib = res["api"][route][c], res["library"][route][c]
            assert api["requests"] == lib["requests"] == 12 and api["errors"] == lib["errors"] == 0, (route, c)
            assert 0 < api["p50_ms"] <= api["p95_ms"] <= api["p99_ms"] and api["req_s"] > 0
            assert api["api_over_library"] > 0
            assert 0 < api["server_mean_ms"] < api["p99_ms"]  # the app's own histogram: part of the latency
    soak = res["soak"]
    assert soak["errors"] == 0 and soak["requests"] > 0 and soak["rss_end_mb"] > 0
    assert "targets: home p99" in proc.stdout and "soak 2 s at c=4" in proc.stdout
    # its key is gone afterwards
    assert world["db"][keys.COLLECTION].count_documents({"name": {"$regex": "^bench-serve-"}}) == 0


def test_the_make_run_summary_reads_the_served_model(world, mongo_uri, milvus_uri, monkeypatch):
    """`make run` ends with this summary (musicrec.local.summary): the active model, a user's home feed
    from it (played tracks excluded as the publish stored them), and a lyrics search."""
    from musicrec import stores
    from musicrec.local import summary

    w = world
    monkeypatch.setattr(stores, "DEFAULT_DB", w["db"].name)  # the summary reads the project's database
    models = summary.collect_models(mongo_uri, milvus_uri, k=5)
    assert models["model"]["_id"] == w["version"]
    assert models["user_id"] and len(models["recommendations"]) == 5
    played = w["db"]["users"].find_one({"_id": models["user_id"]})["played_tracks"][w["version"]]
    assert not {r.track_id for r in models["recommendations"]} & set(played)
    lyrics = summary.collect_lyrics_search(mongo_uri, milvus_uri, models["user_id"])
    assert lyrics["model"] is not None and lyrics["rows"] > 0, lyrics
