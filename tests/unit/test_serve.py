"""The serving API's pure parts: settings from the workers' connection variables, the event key and
per-event checks, key scopes; and that the package never imports Airflow."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from musicrec.serve import events, keys
from musicrec.serve.deps import Settings
from musicrec.stores import milvus_from_conn, mongo_from_conn


def test_settings_from_the_embedded_default(tmp_path):
    from musicrec.local import envfile, services

    s = Settings.from_env(envfile.embedded_env(tmp_path))
    assert s.mongo_uri == f"mongodb://127.0.0.1:{services.mongo_port()}/" and s.mongo_db == "musicrec"
    assert s.milvus_uri == f"http://127.0.0.1:{services.milvus_port()}" and s.milvus_token == ""
    assert s.cors_origins == ()


def test_settings_overrides_and_cors():
    s = Settings.from_env({"AIRFLOW_CONN_MONGO_DEFAULT": "mongo://a:1/x",
                           "MUSICREC_SERVE_MONGO_URI": "mongodb://b:2/", "MUSICREC_SERVE_MONGO_DB": "y",
                           "MUSICREC_SERVE_MILVUS_URI": "http://m:3", "MUSICREC_SERVE_CORS_ORIGINS":
                               "https://a.example, https://b.example,", "MUSICREC_SERVE_EXCLUDE_PLAYED": "false"})
    assert (s.mongo_uri, s.mongo_db, s.milvus_uri) == ("mongodb://b:2/", "y", "http://m:3")
    assert s.cors_origins == ("https://a.example", "https://b.example") and s.exclude_played is False
    empty = Settings.from_env({})
    assert empty.mongo_db == "musicrec" and empty.exclude_played is True


@pytest.mark.parametrize(("conn", "uri", "db"), [
    ("mongo://127.0.0.1:27117/musicrec", "mongodb://127.0.0.1:27117/", "musicrec"),
    ("mongo://user:p%40ss@db.internal:27017/music?authSource=admin", "mongodb://user:p%40ss@db.internal:27017/"
     "?authSource=admin", "music"),
    (json.dumps({"conn_type": "mongo", "host": "cluster.example", "login": "u", "password": "pw",
                 "schema": "musicrec", "extra": {"srv": True, "tls": True}}),
     "mongodb+srv://u:pw@cluster.example/?tls=true", "musicrec"),
])
def test_mongo_from_conn(conn, uri, db):
    assert mongo_from_conn(conn) == (uri, db)


def test_milvus_from_conn():
    """The same parse as ``MilvusHook.settings`` (both call ``musicrec.stores.milvus_settings``)."""
    s = milvus_from_conn(json.dumps({"conn_type": "milvus", "extra": {"uri": "http://m:19530", "token": "t"}}))
    assert (s.uri, s.token) == ("http://m:19530", "t")
    s = milvus_from_conn("milvus://root:Milvus@milvus:19530/music?timeout=3")
    assert (s.uri, s.token, dict(s.options)) == ("http://milvus:19530", "root:Milvus", {"db_name": "music",
                                                                                     "timeout": 3.0})
    assert milvus_from_conn('{"conn_type": "milvus", "host": "m"}').uri == "http://m:19530"
    assert milvus_from_conn(None) is None
    with pytest.raises(ValueError, match="extra.uri or a host"):
        milvus_from_conn('{"conn_type": "milvus"}')


def test_event_id_is_the_event_key():
    ts = datetime(2009, 5, 4, 10, tzinfo=UTC)
    a = events.event_id("u1", ts, "t1", "listen")
    assert len(a) == 64 and a == events.event_id("u1", ts.replace(tzinfo=None), "t1", "listen")
    assert a == events.event_id("u1", ts.astimezone(timezone(timedelta(hours=2))), "t1", "listen")
    assert len({a, events.event_id("u1", ts, "t1", "skip"), events.event_id("u2", ts, "t1", "listen"),
                events.event_id("u1", ts + timedelta(milliseconds=1), "t1", "listen"),
                events.event_id("u1", ts, "t2", "listen")}) == 5


def test_event_checks():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ok = events.check({"user_id": " u1 ", "track_id": "t1", "ts": "2009-05-04T10:00:00.123456Z"}, now)
    assert ok.reason is None and ok.doc["user_id"] == "u1" and ok.doc["action"] == "listen"
    assert ok.doc["ts"] == datetime(2009, 5, 4, 10, 0, 0, 123000, tzinfo=UTC)  # milliseconds, like the lake
    by_name = events.check({"user_id": "u1", "artist": "A", "title": "T", "ts": 0, "action": "SKIP"}, now)
    assert by_name.doc["action"] == "skip" and by_name.doc["ts"] == datetime(1970, 1, 1, tzinfo=UTC)
    cases = {"not_an_object": [], "empty_user": {"track_id": "t", "ts": 0},
             "bad_user_id": {"user_id": "x" * 65, "track_id": "t", "ts": 0},
             "bad_timestamp": {"user_id": "u", "track_id": "t", "ts": "2009-02-30T00:00:00"},
             "future_timestamp": {"user_id": "u", "track_id": "t", "ts": (now + timedelta(minutes=6)).isoformat()},
             "empty_track": {"user_id": "u", "title": "only a title", "ts": 0},
             "bad_track_id": {"user_id": "u", "track_id": "a\x00b", "ts": 0},
             "too_long": {"user_id": "u", "artist": "a" * 2000, "title": "t", "ts": 0},
             "bad_action": {"user_id": "u", "track_id": "t", "ts": 0, "action": "pause"}}
    for reason, obj in cases.items():
        assert events.check(obj, now).reason == reason, reason
    assert events.check({"user_id": "u", "track_id": "t", "ts": (now + timedelta(minutes=4)).isoformat()},
                        now).reason is None


def test_scopes_and_hash():
    assert keys.parse_scopes("events, read,read") == ["events", "read"]
    for bad in ("", "admin", "read,write"):
        with pytest.raises(keys.KeyRequestError):
            keys.parse_scopes(bad)
    assert keys.hash_key("mrk_x") == keys.hash_key("mrk_x") != keys.hash_key("mrk_y")


def test_serve_package_imports_no_airflow():
    code = ("import sys, musicrec.serve.app, musicrec.serve.__main__; "
            "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stores_down_answer_503_and_healthz_still_answers():
    from fastapi.testclient import TestClient

    from musicrec.serve.app import create_app
    from tests.conftest import free_port

    settings = Settings(mongo_uri=f"mongodb://127.0.0.1:{free_port()}/", milvus_uri=f"http://127.0.0.1:{free_port()}",
                        store_timeout_s=0.3)
    app = create_app(settings)
    with TestClient(app) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        r = http.get("/v1/users/u/recommendations", headers={"Authorization": "Bearer mrk_x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
        assert ready.json()["checks"]["mongo"].startswith("error") and ready.json()["checks"]["milvus"].startswith("error")
        assert 'route="/v1/users/{user_id}/recommendations",status="503"' in http.get("/metrics").text
